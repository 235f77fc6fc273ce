"""opensipy: a pre-fork SIP server in Python, built the way OpenSIPS is."""
__version__ = "0.1.0"
NAME = "opensipy"
