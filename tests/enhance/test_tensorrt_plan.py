"""The TensorRT backends' pure logic, without TensorRT or a GPU: builder flags per TensorRT version,
every I/O tensor planned from the engine and bound, GPU memory and contexts given back once, and
the health checks' backoff schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.enhance.fake_tensorrt import (
    FakeCuda,
    FakeEngine,
    Mode,
    TensorDecl,
    default_tensors,
    nptype,
)
from vehicle_agent.backoff import Backoff, backoff_delay
from vehicle_agent.enhance.base import BackendUnavailableError
from vehicle_agent.enhance.tensorrt_plan import (
    BuildFlags,
    CalibrationFeed,
    IoBindings,
    PlanError,
    PrecisionUnavailableError,
    PrimaryContext,
    choose_build,
    parse_version,
    plan_io,
)

PROFILE = ((1, 3, 8, 8), (1, 3, 48, 64), (1, 3, 480, 640))


# -- builder flags by version ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "precision", "strongly_typed", "flags", "calibrate"),
    [
        # JetPack 6.2: weak typing, the precision flags as before.
        ("10.3.0", "fp32", False, (), False),
        ("10.3.0", "fp16", False, ("FP16",), False),
        ("10.3.0", "int8", False, ("FP16", "INT8"), True),
        # JetPack 7.2: strongly typed where nothing is lost, the deprecated flags where needed.
        ("10.16.0", "fp32", True, (), False),
        ("10.16.0", "fp16", False, ("FP16",), False),
        ("10.16.0", "int8", False, ("FP16", "INT8"), True),
        # TensorRT 11: strongly typed only.
        ("11.0.0", "fp32", True, (), False),
        ("11.0.0", "fp16", True, (), False),
    ],
)
def test_the_builder_flags_follow_the_tensorrt_version(
    version: str, precision: str, strongly_typed: bool, flags: tuple[str, ...], calibrate: bool
) -> None:
    chosen = choose_build(version, precision)
    assert (chosen.strongly_typed, chosen.flags, chosen.calibrate) == (
        strongly_typed,
        flags,
        calibrate,
    )
    assert chosen.strongly_typed == (chosen.describe() == "strongly typed")


def test_deprecations_and_precision_changes_are_said_in_the_notes() -> None:
    assert choose_build("10.3.0", "fp16").notes == ()
    (note,) = choose_build("10.16.0", "fp16").notes
    assert "deprecated on TensorRT 10.16.0" in note
    (note,) = choose_build("10.16.0", "int8").notes
    assert "deprecated" in note
    (note,) = choose_build("11.0.0", "fp16").notes
    assert "no FP16 builder flag" in note
    assert "model's own types" in note
    assert choose_build("10.3.0", "fp16").describe() == "weakly typed FP16"
    assert BuildFlags(strongly_typed=False).describe() == "weakly typed"


@pytest.mark.parametrize(
    ("version", "available"),
    [("11.0.0", None), ("11.2.1", True), ("10.16.0", False)],
)
def test_int8_where_calibration_does_not_exist_is_a_clear_permanent_refusal(
    version: str, available: bool | None
) -> None:
    with pytest.raises(PrecisionUnavailableError) as caught:
        choose_build(version, "int8", calibrator_available=available)
    message = str(caught.value)
    assert f"INT8 calibration not available on TensorRT {version}" in message
    assert "fp16" in message
    # Unavailable, not a load failure: the chain never retries it.
    assert isinstance(caught.value, BackendUnavailableError)


def test_a_missing_fp16_flag_wins_over_the_version() -> None:
    chosen = choose_build("10.16.0", "fp16", fp16_flag_available=False)
    assert chosen.strongly_typed
    assert chosen.flags == ()


def test_tensorrt_before_10_and_odd_inputs_are_refused() -> None:
    with pytest.raises(BackendUnavailableError, match=r"older than 10\.0"):
        choose_build("8.6.1", "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        choose_build("10.3.0", "bf16")
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_version("unknown")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.3.0.30", (10, 3, 0)),
        ("10.16", (10, 16, 0)),
        ("11.0.0b1", (11, 0, 0)),
        ("10", (10, 0, 0)),
    ],
)
def test_versions_parse_as_jetpack_and_pip_write_them(text: str, parsed: tuple[int, ...]) -> None:
    assert parse_version(text) == parsed


# -- the I/O plan ------------------------------------------------------------------------------


def engine(cuda: FakeCuda, tensors: list[TensorDecl] | None = None) -> FakeEngine:
    return FakeEngine(cuda, tensors or default_tensors(), PROFILE)


def test_every_tensor_is_planned_from_the_engine_after_the_input_shape_is_set() -> None:
    fake = engine(FakeCuda(), default_tensors(output_dtype="HALF"))
    context = fake.create_execution_context()
    plans = plan_io(fake, context, {"x": (1, 3, 48, 64)}, input_mode=Mode.INPUT, nptype=nptype)
    assert [(p.name, p.is_input, p.shape, p.dtype.name) for p in plans] == [
        ("x", True, (1, 3, 48, 64), "float32"),
        # The output's own dtype and shape, not the input profile's float32.
        ("y", False, (1, 3, 48, 64), "float16"),
        ("aux", False, (1, 1, 6, 8), "int32"),
    ]
    assert plans[1].nbytes == 3 * 48 * 64 * 2
    assert plans[2].nbytes == 6 * 8 * 4


def test_a_refused_input_shape_is_an_error_naming_the_profile() -> None:
    fake = engine(FakeCuda())
    context = fake.create_execution_context()
    with pytest.raises(PlanError) as caught:
        plan_io(fake, context, {"x": (1, 3, 960, 1280)}, input_mode=Mode.INPUT, nptype=nptype)
    message = str(caught.value)
    assert "set_input_shape('x', (1, 3, 960, 1280)) refused" in message
    assert "max (1, 3, 480, 640)" in message
    with pytest.raises(PlanError, match="inputs are"):
        plan_io(fake, context, {"image": (1, 3, 8, 8)}, input_mode=Mode.INPUT, nptype=nptype)


def test_types_without_numpy_and_data_dependent_shapes_are_refused() -> None:
    cuda = FakeCuda()
    bf16 = [*default_tensors()[:1], TensorDecl("y", Mode.OUTPUT, "BF16", (1, 3, -1, -1))]
    with pytest.raises(PlanError, match="'y' is BF16: no numpy equivalent"):
        plan_io(
            engine(cuda, bf16),
            engine(cuda, bf16).create_execution_context(),
            {"x": (1, 3, 8, 8)},
            input_mode=Mode.INPUT,
            nptype=nptype,
        )
    nms = [
        *default_tensors()[:1],
        TensorDecl("boxes", Mode.OUTPUT, "FLOAT", (-1, 4), lambda _s: (-1, 4)),
    ]
    fake = engine(cuda, nms)
    with pytest.raises(PlanError, match="data-dependent"):
        plan_io(
            fake,
            fake.create_execution_context(),
            {"x": (1, 3, 8, 8)},
            input_mode=Mode.INPUT,
            nptype=nptype,
        )


def bindings(
    cuda: FakeCuda, fake: FakeEngine, max_shape: tuple[int, ...] = PROFILE[2]
) -> IoBindings:
    context = fake.create_execution_context()
    with_context = cuda.Device(0).retain_primary_context()
    with_context.push()
    try:
        return IoBindings(
            cuda, fake, context, {"x": max_shape}, input_mode=Mode.INPUT, nptype=nptype
        )
    finally:
        cuda.Context.pop()


def test_every_output_gets_a_buffer_of_its_own_size_and_type_and_an_address() -> None:
    cuda = FakeCuda()
    fake = engine(cuda, default_tensors(output_dtype="HALF"))
    io = bindings(cuda, fake)
    (context,) = fake.contexts
    assert set(context.addresses) == {"x", "y", "aux"}
    assert {n: (p.shape, p.dtype.name) for n, p in io.capacity.items()} == {
        "x": ((1, 3, 480, 640), "float32"),
        "y": ((1, 3, 480, 640), "float16"),
        "aux": ((1, 1, 60, 80), "int32"),
    }
    sizes = {int(a.address): a.data.size for a in cuda.memory.values()}
    assert sizes[context.addresses["y"]] == 3 * 480 * 640 * 2
    assert sizes[context.addresses["aux"]] == 60 * 80 * 4
    assert io.input_names == ["x"]
    assert io.output_names == ["y", "aux"]

    frame = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)

    def fill(views: dict[str, npt.NDArray[np.generic]]) -> None:
        np.copyto(views["x"], frame)

    outputs = io.run({"x": frame.shape}, fill)
    assert outputs["y"].dtype == np.float16
    np.testing.assert_allclose(outputs["y"], frame * 0.5, atol=1e-3)
    assert outputs["aux"].shape == (1, 1, 6, 8)
    assert outputs["aux"].ravel().tolist() == list(range(48))


def test_an_input_past_the_buffers_or_a_failed_execution_is_an_error() -> None:
    cuda = FakeCuda()
    fake = engine(cuda)
    io = bindings(cuda, fake, max_shape=(1, 3, 48, 64))  # buffers smaller than the profile
    with pytest.raises(PlanError, match="more than its buffer"):
        io.run({"x": (1, 3, 96, 128)}, lambda _views: None)
    fake.contexts[0].addresses.pop("aux")  # an unbound output: TensorRT refuses to run
    with pytest.raises(PlanError, match="execute_async_v3 returned False"):
        io.run({"x": (1, 3, 48, 64)}, lambda _views: None)


def test_freeing_the_buffers_gives_everything_back_once() -> None:
    cuda = FakeCuda()
    io = bindings(cuda, engine(cuda))
    assert (cuda.device_live, cuda.host_live) == (3, 3)
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    io.free()
    io.free()
    cuda.Context.pop()
    assert (cuda.device_live, cuda.host_live) == (0, 0)
    with pytest.raises(PlanError, match="freed"):
        io.run({"x": (1, 3, 8, 8)}, lambda _views: None)


# -- GPU lifetimes -----------------------------------------------------------------------------


def test_the_primary_context_is_retained_once_and_released_once() -> None:
    cuda = FakeCuda()
    gpu = PrimaryContext(cuda, 0)
    assert (gpu.name, gpu.compute_capability, cuda.retained) == ("Orin (fake)", "8.7", 1)
    with gpu:
        assert cuda.stack
    assert not cuda.stack
    current: list[bool] = []
    gpu.close(lambda: current.append(bool(cuda.stack)))
    gpu.close(lambda: current.append(True))
    assert current == [True]  # the release ran once, with the context current
    assert cuda.retained == 0
    assert gpu.closed
    with pytest.raises(PlanError, match="already released"), gpu:
        pass


def test_no_cuda_device_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailableError, match="no CUDA device 0: cuInit failed"):
        PrimaryContext(FakeCuda(devices=0), 0)
    with pytest.raises(BackendUnavailableError, match="no CUDA device 3"):
        PrimaryContext(FakeCuda(), 3)


def test_the_calibration_feed_batches_readable_images_and_frees_its_buffers(
    tmp_path: Path,
) -> None:
    cuda = FakeCuda()
    images = [tmp_path / f"{i}.png" for i in range(3)]

    def fill(path: Path, host: npt.NDArray[np.generic]) -> bool:
        if path.name == "1.png":
            return False  # unreadable: skipped
        host[...] = float(path.stem)
        return True

    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    feed = CalibrationFeed(cuda, images, fill=fill, shape=(1, 3, 4, 4), cache=tmp_path / "t.calib")
    first = feed.next_batch()
    assert first is not None
    assert cuda.memory[first[0]].data.view(np.float32).max() == 0.0
    second = feed.next_batch()
    assert second is not None
    assert cuda.memory[second[0]].data.view(np.float32).max() == 2.0
    assert feed.next_batch() is None
    assert feed.batches == 2
    assert feed.read_cache() is None
    feed.write_cache(b"table")
    assert feed.read_cache() == b"table"
    feed.free()
    feed.free()
    cuda.Context.pop()
    assert (cuda.device_live, cuda.host_live) == (0, 0)
    assert feed.next_batch() is None


# -- backoff -------------------------------------------------------------------------------------


def test_the_health_check_backoff_doubles_up_to_its_cap() -> None:
    schedule = [backoff_delay(n, 30.0, 900.0) for n in range(8)]
    assert schedule == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    assert backoff_delay(10_000, 30.0, 900.0) == 900.0  # no overflow after months of failures
    assert backoff_delay(3, 0.0, 900.0) == 0.0  # promote_after_s = 0: at once
    assert backoff_delay(3, 60.0, 10.0) == 60.0  # a cap below the first wait is the first wait
    plain = Backoff(1.0, 8.0, jitter=0.0)
    assert [plain.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
