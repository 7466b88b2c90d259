"""Property-based config fuzzing: 1,000 random command lines of overrides (real keys and typos, numbers,
flags, nulls, text, brackets, interpolations) through `autossl pretrain ... --cfg`: never a traceback; each
accepted or refused with exactly one line naming the problem."""
from __future__ import annotations

import contextlib
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autossl.cli.main import main
from autossl.train.config import _known_keys

KEYS = sorted(_known_keys()) + ["model.params.temperature", "model.params.proj_hidden_dim", "model.params.lambda_param",
                                "model.params.momentum_base", "model.params.mask_ratio", "experiment"]
TYPOS = ["optimizer.lrr", "data.batchsize", "trainer.max_step", "model.params.temprature", "foo", "data"]
SCALARS = st.one_of(
    st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "abc", "1e999", "-0.0", "nan", "[1,2]", "[0.4,0.4,0.2,0.1]", "{a: 1}",
                     "${method}", "${nope}", "'quoted'", "[", "}", ",", "a,b", "mnist", "cifar10", "folder", "vicreg",
                     "fcmae", "vit_tiny", "resnet18", "lars", "bf16-mixed", "32", "auto", "ddp", ""]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
)
OVERRIDE = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS + TYPOS), SCALARS) | st.sampled_from(
    ["optimizer.lr", "=3", "+data.x=1", "~seed", "experiment=cifar10_mae", "experiment=nope"])
SEEN = {"accepted": 0, "refused": 0}


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
def test_random_overrides_never_give_a_traceback(overrides):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["pretrain", *overrides, "--cfg"])  # an exception escaping here fails the test
    message = err.getvalue().strip()
    if code == 0:
        SEEN["accepted"] += 1
        assert "method:" in out.getvalue()
    else:
        SEEN["refused"] += 1
        assert code == 1, (overrides, code, message)
        assert message.startswith("autossl pretrain: error: ") and "\n" not in message, (overrides, message)
        assert "Traceback" not in message


def test_the_fuzzer_ran_a_thousand_cases_both_accepted_and_refused():
    # runs after the property above (file order): both outcomes occurred, so the property tested something
    assert SEEN["accepted"] + SEEN["refused"] >= 1000
    assert SEEN["accepted"] > 20 and SEEN["refused"] > 200, SEEN
