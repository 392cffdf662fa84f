"""A model with a dynamic sequence length compiles (Lava cannot lower a conv over symbolic dims
then), and runs on Lava all the same: the graph is specialised to each input's shape, lowered
once per shape and cached; counts and accumulators equal the reference's."""
import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

import sbcompile

RNG = np.random.default_rng(5)


def _sequence_conv() -> onnx.ModelProto:
    w1 = onnx.numpy_helper.from_array(RNG.standard_normal((6, 4, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(RNG.standard_normal((2, 6, 3)).astype(np.float32), "w2")
    nodes = [h.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1]),
             h.make_node("Relu", ["a"], ["b"]),
             h.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1])]
    graph = h.make_graph(nodes, "seq", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, "T"])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 2, "T"])], [w1, w2])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_lava_specialises_dynamic_dims_per_input_shape():
    calib = [{"x": RNG.standard_normal((1, 4, t)).astype(np.float32)} for t in (9, 14)]
    model = sbcompile.compile(_sequence_conv(), preset="spikingbrain", calib=calib)
    assert not model.report["targets"]["lava"]["lowered"]  # symbolic T at compile time
    for length in (12, 20, 12):
        x = {"x": RNG.standard_normal((1, 4, length)).astype(np.float32)}
        want = model.run(x, "reference")
        got = model.run(x, "lava", timeout=120)
        assert got.counts and set(got.counts) == set(want.counts)
        for name, value in want.counts.items():
            np.testing.assert_array_equal(got.counts[name], value, err_msg=name)
        np.testing.assert_allclose(got.outputs["y"], want.outputs["y"], rtol=1e-6, atol=1e-6)
    assert len(model._specialised) == 2  # one lowering per shape
