"""Everything of the Rheumatic Digital Twin that runs on Spark."""
