"""Dynamic dims and inputs given once pinned from input data: when a lowering needs a dim static
(a recurrent node unrolled over its sequence length) and the model leaves it symbolic, the
calibration data's shapes fix it; only the dims in the way are pinned, the others (the batch)
stay symbolic. When an ``If`` on a given-once input (a sample rate) cannot be lowered as a
select, the input's value in the calibration data fixes the branch, and a run with another value
is refused naming it.
"""
from __future__ import annotations

import numpy as np

from sbcompile.batch_axes import batch_dim
from sbcompile.errors import DynamicDimError, SbcError
from sbcompile.frontends import onnx_model
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.ir.graph import Graph

MAX_FIXED_ELEMENTS = 16  # inputs given once that a calibration value may fix (scalars, flags)


def pinned_input_shapes(model, input_shapes: dict | None, dims: tuple[str, ...],
                        data_shapes: list[dict[str, tuple]], batch: bool = False
                        ) -> dict[str, list]:
    """``input_shapes`` with every input dim named in ``dims`` set to its size in the data
    (every feed must agree); when no input declares one of ``dims`` (a dim computed inside the
    model, such as a convolution's output length), every symbolic input dim but the batch dim
    (``batch``: that too). Raises SbcError naming the input and dim when the data cannot pin
    it."""
    declared = _declared_inputs(model, input_shapes)
    named = {d for shape in declared.values() for d in shape if isinstance(d, str)}
    wanted = set(dims) & named or (named if batch else named - {batch_dim(declared)})
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


def _declared_inputs(model, input_shapes: dict | None) -> dict[str, list]:
    """{input: its declared dims (symbolic ones as strings)} after ``input_shapes``."""
    proto, label = onnx_model.read_model(model)
    proto = onnx_model.upgrade_opset(proto, label)
    onnx_model.mark_dynamic_dims(proto)
    onnx_model.apply_input_shapes(proto, input_shapes, label)
    return {info.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                        for d in info.type.tensor_type.shape.dim]
            for info in onnx_model.runtime_inputs(proto)}


def given_once(model, input_shapes: dict | None) -> set[str]:
    """Inputs without the batch dim or a symbolic axis 0 (``sbcompile.batch_axes``)."""
    declared = _declared_inputs(model, input_shapes)
    dim = batch_dim(declared)
    return {n for n, s in declared.items()
            if dim not in s and not (s and isinstance(s[0], str))}


def fixed_values(data_feeds: list[dict], given_once: set[str]) -> dict[str, np.ndarray]:
    """The inputs given once whose value every feed agrees on (small ones only)."""
    fixed = {}
    for name in sorted(given_once):
        arrays = [np.asarray(f[name]) for f in data_feeds if name in f]
        if arrays and arrays[0].size <= MAX_FIXED_ELEMENTS and all(
                np.array_equal(a, arrays[0]) for a in arrays):
            fixed[name] = arrays[0]
    return fixed


def pinned_from_data(model, input_shapes: dict | None, error: DynamicDimError, calib) -> Graph:
    """The model lowered with what ``error`` (a DynamicDimError) asks static fixed from the
    calibration data ``calib`` (a dict of arrays or a list of feeds), in steps until it
    lowers: the dims in the way (or all but the batch dim), then the values of inputs given
    once (a sample rate), then the batch dim too. Raises the last step's error."""
    feeds = list(calib) if isinstance(calib, (list, tuple)) else [calib]
    shapes = [{k: np.shape(v) for k, v in f.items()} for f in feeds]
    values = fixed_values(feeds, given_once(model, input_shapes))
    steps = [(False, None), (False, values), (True, values)] if values else \
        [(False, None), (True, None)]
    for i, (batch, fixed) in enumerate(steps):
        try:
            return load_onnx(model, pinned_input_shapes(model, input_shapes, error.dims, shapes,
                                                        batch=batch), fixed)
        except DynamicDimError as e:
            error = e
        except SbcError:  # a select over branches the pinned shapes make disagree
            if i == len(steps) - 1:
                raise
    raise error
