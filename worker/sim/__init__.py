"""EPJ simulator: plays clinics' EPJ systems on the kombu queues (no Celery, no database).

`policy` decides what a clinic answers (pure), `engine` runs the clinics on the transport,
`cli` is `timebok epj-sim`. It shares the mappers with the worker, never the worker's state.
"""

from worker.sim.cli import add_arguments, main, run_from_args
from worker.sim.engine import SimConfig, SimRegistry, Simulator
from worker.sim.policy import (
    CONFIRM_PROBABILITY,
    OSLO,
    POLICY_KEY,
    REJECT_TEXTS,
    Decision,
    Policy,
    check_policy,
    confirms,
    decide,
    is_apprec,
    mask_fnrs,
    next_weekday_start,
    read_policies,
    receipt_ok,
    receipt_refused,
    reply_function,
    reply_message,
)

__all__ = [
    "CONFIRM_PROBABILITY",
    "OSLO",
    "POLICY_KEY",
    "REJECT_TEXTS",
    "Decision",
    "Policy",
    "SimConfig",
    "SimRegistry",
    "Simulator",
    "add_arguments",
    "check_policy",
    "confirms",
    "decide",
    "is_apprec",
    "main",
    "mask_fnrs",
    "next_weekday_start",
    "read_policies",
    "receipt_ok",
    "receipt_refused",
    "reply_function",
    "reply_message",
    "run_from_args",
]
