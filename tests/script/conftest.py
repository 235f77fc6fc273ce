import pytest


@pytest.fixture(autouse=True)
def fresh_script_vars():
    """$var() values live per process: every test starts without any."""
    from opensipy import pvar
    pvar.script_vars.clear()
    pvar.ctx.retcode = 0
    pvar.ctx.params = ()
    yield
    pvar.script_vars.clear()
