"""Dynamic dims pinned from input data: when a lowering needs a dim static (a recurrent node
unrolled over its sequence length) and the model leaves it symbolic, the calibration data's
shapes fix it. Only the dims in the way are pinned; the others (the batch) stay symbolic.
"""
from __future__ import annotations

from sbcompile.errors import SbcError
from sbcompile.frontends import onnx_model


def pinned_input_shapes(model, input_shapes: dict | None, dims: tuple[str, ...],
                        data_shapes: list[dict[str, tuple]]) -> dict[str, list]:
    """``input_shapes`` with every input dim named in ``dims`` set to its size in the data
    (every feed must agree); when no input declares one of ``dims`` (a dim computed inside the
    model), every symbolic input dim is pinned. Raises SbcError naming the input and dim when the
    data cannot pin it."""
    proto, label = onnx_model.read_model(model)
    proto = onnx_model.upgrade_opset(proto, label)
    onnx_model.mark_dynamic_dims(proto)
    onnx_model.apply_input_shapes(proto, input_shapes, label)
    declared = {}
    for info in onnx_model.runtime_inputs(proto):
        declared[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                               for d in info.type.tensor_type.shape.dim]
    named = {d for shape in declared.values() for d in shape if isinstance(d, str)}
    wanted = set(dims) & named or named
    shapes = {}
    for name, shape in declared.items():
        if not any(d in wanted for d in shape):
            continue
        sizes = {tuple(f[name]) for f in data_shapes if name in f}
        if not sizes:
            raise SbcError(f"input '{name}': its dim '{next(d for d in shape if d in wanted)}' "
                           "must be static and the calibration data does not hold the input")
        if len({len(s) for s in sizes}) > 1 or len(next(iter(sizes))) != len(shape):
            raise SbcError(f"input '{name}': the calibration data has shapes "
                           f"{sorted(list(s) for s in sizes)}, the model declares {shape}")
        pinned = []
        for axis, d in enumerate(shape):
            if d in wanted:
                seen = {s[axis] for s in sizes}
                if len(seen) > 1:
                    raise SbcError(f"input '{name}': dim '{d}' (axis {axis}) must be static to "
                                   f"lower the model, and the calibration feeds disagree on it "
                                   f"({sorted(seen)})")
                pinned.append(seen.pop())
            else:
                pinned.append(d)
        shapes[name] = pinned
    return {**(input_shapes or {}), **shapes}
