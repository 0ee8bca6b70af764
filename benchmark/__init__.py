"""DisaggBench: does a federated-learning privacy defense survive gradient disaggregation?"""

__version__ = "0.2.0"
