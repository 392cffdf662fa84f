"""The streaming fidelity figures stay numbers JSON holds, or refuse: an SNR whose signal
underflows beside a huge error is -inf dB (reported as null), and values that overflowed to Inf
or NaN are an error naming which model made them (they were a math domain error and a report
JSON could not hold)."""
import numpy as np
import pytest

from sbcompile.errors import SbcError
from sbcompile.passes.metrics import Fidelity


def test_snr_of_a_vanishing_signal_beside_a_huge_error():
    f = Fidelity()
    f.update(np.array([1e100, 0.0]), np.array([1e-150, 0.0]))  # bb / ee underflows to 0
    assert f.result()["snr_db"] is None and np.isfinite(f.result()["cosine"])


@pytest.mark.parametrize("approx,ref,which", [([np.inf, 1.0], [1.0, 1.0], "spiked"),
                                              ([1.0, 1.0], [np.nan, 1.0], "float")])
def test_non_finite_values_are_refused(approx, ref, which):
    with pytest.raises(SbcError, match=f"the {which} model computes Inf or NaN"):
        Fidelity().update(np.array(approx), np.array(ref))
