"""No-op rules: nodes that pass their input through become Identity, which onnx_ir's identity
elimination then removes (so the IR has no identity nodes from them). onnxscript's no-op Cast
rule is used as it is; its Dropout rules read the opset-7 attributes, so these read Dropout's
inputs.
"""
from __future__ import annotations

from onnxscript.rewriter import pattern

from sbcompile.frontends.rewrite_base import array, sourced

VARIADIC = ("Sum", "Max", "Min", "Mean")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")


def _unused(value) -> bool:
    return value is None or (not value.uses() and not value.is_graph_output())


class DropoutInference(pattern.RewriteRuleClassBase):
    """Dropout(x[, ratio][, training_mode False]) whose mask nobody reads -> Identity(x)."""

    def pattern(self, op, x):
        return op.Dropout(x, _allow_other_inputs=True, _outputs=["y"])

    def check(self, context, y, **_):
        node = y.producer()
        training = array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else False
        return (training is not None and not bool(training) and "seed" not in node.attributes
                and all(_unused(v) for v in node.outputs[1:]))

    def rewrite(self, op, x, **_):
        return op.Identity(x)


class PassThrough(pattern.RewriteRuleClassBase):
    """Sum, Max, Min or Mean of one input, and a Reduce* with noop_with_empty_axes=1 and no
    axes -> Identity."""

    def __init__(self, op_type: str):
        super().__init__(f"PassThrough[{op_type}]")
        self._op_type = op_type

    def pattern(self, op, x):
        return getattr(op, self._op_type)(x, _allow_other_inputs=self._op_type in REDUCTIONS,
                                          _outputs=["y"])

    def check(self, context, y, **_):
        if self._op_type in VARIADIC:
            return True
        node = y.producer()
        noop = node.attributes.get("noop_with_empty_axes")
        given = "axes" in node.attributes or (len(node.inputs) > 1 and node.inputs[1] is not None)
        axes = array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
        return (noop is not None and noop.as_int() == 1
                and (not given or (axes is not None and axes.size == 0)))

    def rewrite(self, op, x, **_):
        return op.Identity(x)


RULES = [sourced(DropoutInference), *(sourced(PassThrough, t) for t in VARIADIC + REDUCTIONS)]
