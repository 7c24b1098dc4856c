"""Everything of the Rheumatic Digital Twin that runs on Ray: data, models, training, the twin index."""
