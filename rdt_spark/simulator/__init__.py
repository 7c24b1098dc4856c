"""The synthetic rheumatoid-arthritis registry: OMOP tables, extra modalities and hidden truth.

``generate_registry`` is the entry point. The modules, from the Spark side inwards:

- ``registry``: the Spark pass and the omop.*, ext.* and truth.* tables selected from it;
- ``records``: the one long record every simulated row is written as;
- ``patient``: one patient's course, week by week, and the rows it leaves;
- ``disease``: the hidden phenotypes, disease activity, flares, drugs and their effect;
- ``care``: which drug class and ingredient a treatment decision starts;
- ``notes`` and ``modalities``: visit notes, radiograph scores and omics samples;
- ``concepts``: the OMOP concepts the registry uses.

Example: ``tables, records = generate_registry(spark, GenerateConfig(patients=60, seed=3))``
gives ``tables["omop.person"]`` with 60 rows; write the tables, then ``records.unpersist()``.
"""

from rdt_spark.simulator.registry import GenerateConfig, generate_registry

__all__ = ["GenerateConfig", "generate_registry"]
