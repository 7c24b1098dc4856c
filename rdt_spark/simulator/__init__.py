"""The synthetic rheumatoid-arthritis registry: OMOP tables, extra modalities and hidden truth.

``generate_registry`` (in ``registry``) is the entry point; the model behind it lives in
``disease`` (the disease course and its care), ``notes`` and ``modalities`` (notes, radiograph
scores, omics) and ``concepts`` (the OMOP concepts it writes).
"""

from rdt_spark.simulator.registry import generate_registry

__all__ = ["generate_registry"]
