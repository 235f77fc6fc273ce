"""opensipy's modules: one package per module (``loadmodule "name.so"``)."""
