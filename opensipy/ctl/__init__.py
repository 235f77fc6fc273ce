"""opensipyctl: the management client (see :mod:`opensipy.ctl.main`)."""
