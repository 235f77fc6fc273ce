"""A registry declaring the functions OpenSIPS's default script uses, with
their OpenSIPS arities and route masks, answering from a per-function
table (constants by default) and recording every call."""
from pathlib import Path

from opensipy import sr_module as S

from script_helpers import Recorder, make_registry

# OpenSIPS's default script, in ../shared beside the repository
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CFG = str(REPO.parent / "shared" / "anchors" / "opensips-default.cfg")

R, F, O, B = S.REQUEST_ROUTE, S.FAILURE_ROUTE, S.ONREPLY_ROUTE, \
    S.BRANCH_ROUTE
E, L = S.ERROR_ROUTE, S.LOCAL_ROUTE


def is_method(msg, methods):
    return 1 if msg.method in methods.split("|") else -1


def has_totag(msg):
    return 1 if msg.to.tag else -1


def declarations(answers: dict):
    """{module: {function: (param kinds, route mask, result)}}; a function
    named in answers returns that instead of its default."""
    def a(name, default):
        return answers.get(name, default)
    return {
        "maxfwd": {"mf_process_maxfwd_header":
                   ("i", R | F | B | L, a("mf_process_maxfwd_header", 1))},
        "signaling": {"send_reply": ("is", R | F | E, a("send_reply", 1))},
        "sipmsgops": {
            "has_totag": ("", R | F | O | B | L, a("has_totag", has_totag)),
            "is_method": ("s", R | F | O | B | L, a("is_method", is_method)),
            "append_hf": ("sS", R | F | B | L, a("append_hf", 1))},
        "tm": {
            "t_check_trans": ("", R | F | O | B, a("t_check_trans", -1)),
            "t_relay": ("IS", R | F, a("t_relay", 1)),
            "t_reply": ("is", R | F, a("t_reply", 1)),
            "t_on_branch": ("s", R | F, a("t_on_branch", 1)),
            "t_on_reply": ("s", R | F | B, a("t_on_reply", 1)),
            "t_on_failure": ("s", R | F | B, a("t_on_failure", 1)),
            "t_was_cancelled": ("", F | O, a("t_was_cancelled", -1))},
        "rr": {"loose_route": ("", R, a("loose_route", -1)),
               "record_route": ("S", R, a("record_route", 1))},
        "acc": {"do_accounting": ("sSI", R | F | B,
                                  a("do_accounting", 1))},
        "registrar": {"save": ("sSS", R | O, a("save", 1)),
                      "lookup": ("sSS", R | F, a("lookup", 1))},
        "core": {"is_myself": ("s", S.ALL_ROUTES, a("is_myself", 1)),
                 "xlog": [("s", S.ALL_ROUTES, a("xlog", 1)),
                          ("ss", S.ALL_ROUTES, a("xlog", 1))]},
    }


def default_registry(answers: dict = None, rec: Recorder = None):
    return make_registry(declarations(answers or {}), rec)
