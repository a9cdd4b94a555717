"""The peers' runners, the corpus generator and the process sampler of benchmarks/pipeline_scale.py."""
