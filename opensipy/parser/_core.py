"""The C library (opensipy._sipparser) and the names it defines.

The extension is built by ``native/build_sipparser.py`` (setup.py does it on
install; ``python native/build_sipparser.py`` builds it in place)."""
try:
    from opensipy._sipparser import ffi, lib
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "opensipy._sipparser is not built: run `python native/build_sipparser.py` "
        "or install the package") from e

# error codes
SP_OK = lib.SP_OK
SP_E_NEEDMORE = lib.SP_E_NEEDMORE

# header types, OpenSIPS-style names: every HDR_*_T of the C header
HDR_TYPES = {name: getattr(lib, name) for name in dir(lib)
             if name.startswith("HDR_") and name.endswith("_T")}
HDR_TYPE_NAMES = {v: k for k, v in HDR_TYPES.items()
                  if k not in ("HDR_MAX_T",)}
globals().update(HDR_TYPES)

METHODS = {name: getattr(lib, name) for name in dir(lib) if name.startswith("METHOD_")}
globals().update(METHODS)
METHOD_NAMES = {v: k[len("METHOD_"):] for k, v in METHODS.items()
                if k not in ("METHOD_UNDEF", "METHOD_OTHER")}

URI_TYPES = {name: getattr(lib, name) for name in
             ("ERROR_URI_T", "SIP_URI_T", "SIPS_URI_T", "TEL_URI_T", "TELS_URI_T",
              "OTHER_URI_T")}
globals().update(URI_TYPES)

LUMP_INS_BEFORE = lib.LUMP_INS_BEFORE
LUMP_REPLACE = lib.LUMP_REPLACE
LUMP_INS_AFTER = lib.LUMP_INS_AFTER


def strerror(code: int) -> str:
    return ffi.string(lib.sp_strerror(code)).decode()
