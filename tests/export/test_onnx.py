"""ONNX export and the onnxruntime backend: parity with the PyTorch networks (1e-4, equal attention arg-max), the
manifest, the backend switch in the pipelines and the CLI, with tiny networks."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from helpers.tiny_models import GENERATOR, MEL, RENDERER, save_tiny_weights
from imtalker.apps.cli import main
from imtalker.config import DemoRendererConfig
from imtalker.errors import InputError
from imtalker.models.demo_renderer import DemoRenderer
from imtalker.models.generator import MotionGenerator
from imtalker.models.mel import MelAudioEncoder
from imtalker.models.renderer import NUM_COARSE_LEVELS, IMTRenderer
from imtalker.pipelines import AudioDrivenPipeline, VideoDrivenPipeline
from imtalker.sampling import SamplingOptions, sample_motion
from imtalker.weights import weights_digest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from imtalker.export.graphs import OPSET, export_onnx, read_manifest, without_inference_caches  # noqa: E402
from imtalker.export.runtime import (OnnxGenerator, OnnxMelEncoder, OnnxRenderer, OnnxWav2Vec2Encoder,  # noqa: E402
                                     onnx_audio_encoder, onnxruntime_networks)

ATOL = 1e-4
TINY_DEMO = DemoRendererConfig(image_size=128, feature_channels=(8, 8, 16, 16, 32),
                               motion_channels=(8, 16, 16, 32, 32, 32), adapt_dim=32, const_channels=8, num_heads=4,
                               warp_hidden=16, warp_fields=4)


def torch_render_with_top1(renderer: IMTRenderer, source, motion: torch.Tensor):
    """PyTorch frames and the finest cross-attention's arg-max cells, read by a hook as the frames graph reads them."""
    found = []
    hook = renderer.imt[NUM_COARSE_LEVELS - 1].block_efc.register_forward_hook(
        lambda module, args, output: found.append(output[1]))
    try:
        with torch.inference_mode():
            frames = renderer.render(source, motion)
    finally:
        hook.remove()
    return frames, torch.cat(found)


def check_renderer_parity(renderer: IMTRenderer, onnx_renderer: OnnxRenderer, seed: int = 0) -> None:
    rng = torch.Generator().manual_seed(seed)
    size = renderer.config.image_size
    image = torch.rand(1, 3, size, size, generator=rng)
    # as a graph makes it: the demo renderer's eager neighbourhood attention (tested against the full one in
    # tests/models/test_demo_renderer.py) would not call the module the hook reads
    source = without_inference_caches(renderer.encode_source(image))
    onnx_source = onnx_renderer.encode_source(image)
    for name, expected in vars(source).items():
        assert (expected is None) == (getattr(onnx_source, name) is None), name
        if expected is None:
            continue
        for want, got in zip(expected if isinstance(expected, list) else [expected],
                             getattr(onnx_source, name) if isinstance(expected, list) else [getattr(onnx_source, name)]):
            torch.testing.assert_close(got, want.float(), atol=ATOL, rtol=0, msg=name)
    for batch in (1, 3):  # the graph was traced at batch 2: the batch axis is dynamic
        motion = source.motion + 0.3 * torch.randn(batch, source.motion.shape[1], generator=rng)
        frames, top1 = torch_render_with_top1(renderer, source, motion)
        onnx_frames, onnx_top1 = onnx_renderer.render_with_top1(onnx_source, motion)
        assert onnx_frames.shape == frames.shape
        torch.testing.assert_close(onnx_frames, frames, atol=ATOL, rtol=0)
        assert torch.equal(onnx_top1, top1)
    images = torch.rand(4, 3, size, size, generator=rng)
    torch.testing.assert_close(onnx_renderer.encode_motion(images), renderer.encode_motion(images), atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    renderer, generator = IMTRenderer(RENDERER).eval(), MotionGenerator(GENERATOR).eval()
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(folder, renderer, generator)
    return renderer, generator, folder


def test_manifest_names_graphs_axes_opset_and_weights(tiny):
    renderer, generator, folder = tiny
    manifest = read_manifest(folder)
    assert manifest["opset"] == OPSET
    assert set(manifest["graphs"]) == {"renderer_source", "renderer_frames", "motion_encoder", "generator_conditions",
                                       "generator_velocity"}
    frames = manifest["graphs"]["renderer_frames"]
    assert frames["outputs"] == ["frames", "top1"]
    assert frames["dynamic_axes"]["driving_motion"] == {"0": "batch"}
    assert manifest["renderer"]["weights_digest"] == weights_digest(renderer)
    assert manifest["generator"]["weights_digest"] == weights_digest(generator)
    for entry in manifest["graphs"].values():  # the names recorded are the graph's own
        session = ort.InferenceSession(str(folder / entry["file"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == entry["inputs"]
        assert [o.name for o in session.get_outputs()] == entry["outputs"]


def test_renderer_graphs_match_pytorch(tiny):
    renderer, _, folder = tiny
    check_renderer_parity(renderer, OnnxRenderer(folder))


def test_frames_and_motion_graphs_run_a_bounded_number_of_frames_at_a_time(tiny, monkeypatch):
    """Memory: a graph run holds every frame's attention scores, so a batch goes through in runs of
    `frames_per_run` (four at 128 px), with the same frames and latents as one PyTorch pass."""
    renderer, _, folder = tiny
    onnx_renderer = OnnxRenderer(folder)
    assert onnx_renderer.frames_per_run == 4
    runs = []
    for graph in (onnx_renderer.frames_graph, onnx_renderer.motion_graph):
        original = graph.run
        monkeypatch.setattr(graph, "run", lambda original=original, **feeds: runs.append(
            len(feeds.get("driving_motion", feeds.get("images")))) or original(**feeds))
    rng = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 128, 128, generator=rng)
    torch.testing.assert_close(onnx_renderer.encode_motion(images), renderer.encode_motion(images), atol=ATOL, rtol=0)
    source = onnx_renderer.encode_source(images[:1])
    motion = source.motion + 0.3 * torch.randn(6, source.motion.shape[1], generator=rng)
    frames = onnx_renderer.render(source, motion)
    with torch.inference_mode():
        torch.testing.assert_close(frames, renderer.render(renderer.encode_source(images[:1]), motion), atol=ATOL,
                                   rtol=0)
    assert runs == [4, 2, 4, 2]
    runs.clear()
    onnx_renderer.render(source, motion, batch_size=3)  # a smaller batch asked for is kept
    assert runs == [3, 3]


def test_demo_renderer_graphs_match_pytorch(tmp_path):
    torch.manual_seed(1)
    renderer = DemoRenderer(TINY_DEMO).eval()
    onnx_renderer = onnxruntime_networks(renderer, folder=tmp_path).renderer
    check_renderer_parity(renderer, onnx_renderer, seed=1)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_generator_graphs_sample_the_same_motion(tiny, cfg_scale):
    _, generator, folder = tiny
    onnx_generator = OnnxGenerator(folder)
    rng = torch.Generator().manual_seed(2)
    features = torch.randn(1, 67, GENERATOR.audio_dim, generator=rng)  # a full chunk and a short one
    ref = torch.randn(1, GENERATOR.motion_dim, generator=rng)
    pose = torch.randn(67, GENERATOR.pose_dim, generator=rng)
    options = SamplingOptions(cfg_scale=cfg_scale, nfe=4, seed=0)
    expected = sample_motion(generator, features, ref, pose=pose, options=options)
    got = sample_motion(onnx_generator, features, ref, pose=pose, options=options)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_folder_is_exported_only_when_it_does_not_hold_these_weights(tiny, monkeypatch):
    from imtalker.export import runtime

    renderer, generator, folder = tiny
    exports = []
    monkeypatch.setattr(runtime, "export_onnx", lambda out, *networks: exports.append(out))
    assert runtime.exported_folder(renderer, generator, folder) == folder and exports == []  # current: reused
    assert runtime.exported_folder(renderer, None, folder) == folder and exports == []
    torch.manual_seed(5)
    runtime.exported_folder(IMTRenderer(RENDERER).eval(), generator, folder)  # other weights: exported anew
    assert exports == [folder]
    monkeypatch.setenv(runtime.CACHE_ENV, str(folder.parent / "cache"))  # no folder named: one per digest
    runtime.exported_folder(renderer, generator)
    assert exports[-1] == folder.parent / "cache" / "-".join(sorted([weights_digest(generator),
                                                                      weights_digest(renderer)]))


def test_backend_checks_are_one_line_input_errors(tiny):
    renderer, generator, folder = tiny
    with pytest.raises(InputError, match="backend must be one of"):
        VideoDrivenPipeline(renderer, backend="tensorrt")
    with pytest.raises(InputError, match="float32"):
        VideoDrivenPipeline(renderer, dtype=torch.bfloat16, backend="onnxruntime", onnx_dir=folder)
    with pytest.raises(InputError, match="not an exported ONNX folder"):
        OnnxRenderer(folder.parent)


def test_networks_already_in_onnxruntime_are_kept_and_only_the_rest_converted(tiny, tmp_path, monkeypatch):
    """How pipelines share one converted renderer (the web UI's two tabs, a batch worker's two pipelines)."""
    from imtalker.export import runtime

    renderer, generator, folder = tiny
    video = VideoDrivenPipeline(renderer, backend="onnxruntime", onnx_dir=folder)
    assert isinstance(video.renderer, OnnxRenderer)
    exports = []
    monkeypatch.setattr(runtime, "export_onnx", lambda out, *networks: exports.append(networks))
    assert VideoDrivenPipeline(video.renderer, backend="onnxruntime", onnx_dir=folder).renderer is video.renderer
    shared, onnx_generator, _ = onnxruntime_networks(video.renderer, generator, folder)
    assert shared is video.renderer and isinstance(onnx_generator, OnnxGenerator) and exports == []
    assert onnxruntime_networks(shared, onnx_generator, tmp_path) == (shared, onnx_generator, None)
    assert exports == []
    with pytest.raises(InputError):  # the folder holds nothing: the generator alone was exported into it
        onnxruntime_networks(shared, generator, tmp_path)
    assert exports == [(None, generator, None)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """The tiny weights folder exported by `imtalker export-onnx`."""
    out = tmp_path_factory.mktemp("exported")
    assert main(["export-onnx", str(weights), str(out)]) == 0
    return out


def write_speech(path, seconds: float) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(0)
    n = int(16000 * seconds)
    waveform = (0.3 * np.sin(np.arange(n) * 0.05) * rng.uniform(0.5, 1, n)).astype(np.float32)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((waveform * 32767).astype(np.int16).tobytes())
    return waveform, 16000


def test_pipeline_backends_make_the_same_video_frames(weights, exported, tmp_path):
    """The whole audio-driven pipeline, torch against onnxruntime: frames equal up to one 8-bit level."""
    from PIL import Image

    portrait = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(portrait)
    audio = write_speech(tmp_path / "speech.wav", 1.0)
    options = dict(crop=False, seed=0, nfe=3)
    torch_frames = np.stack(list(AudioDrivenPipeline.from_pretrained(weights).frames(portrait, audio, **options)))
    onnx_pipe = AudioDrivenPipeline.from_pretrained(weights, backend="onnxruntime", onnx_dir=exported)
    assert isinstance(onnx_pipe.renderer, OnnxRenderer) and isinstance(onnx_pipe.generator, OnnxGenerator)
    assert isinstance(onnx_pipe.audio_encoder, OnnxWav2Vec2Encoder)
    onnx_frames = np.stack(list(onnx_pipe.frames(portrait, audio, **options)))
    assert onnx_frames.shape == torch_frames.shape == (25, 128, 128, 3)
    difference = np.abs(onnx_frames.astype(int) - torch_frames.astype(int))
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_cli_export_onnx_and_generate_with_the_backend(weights, exported, tmp_path, capsys):
    from PIL import Image

    assert {"renderer", "generator"} <= set(read_manifest(exported))
    assert main(["export-onnx", str(weights / "generator.safetensors"), str(tmp_path / "g")]) == 0
    assert set(read_manifest(tmp_path / "g")["graphs"]) == {"generator_conditions", "generator_velocity"}
    assert main(["export-onnx", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "weights not found" in capsys.readouterr().err

    portrait = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(portrait)
    speech = tmp_path / "speech.wav"
    write_speech(speech, 0.5)
    video = tmp_path / "out.mp4"
    args = ["generate", "-i", str(portrait), "-a", str(speech), "-o", str(video), "--weights", str(weights),
            "--no-crop", "--nfe", "3", "--seed", "0", "-q", "--backend", "onnxruntime", "--onnx-dir", str(exported)]
    assert main(args) == 0 and video.stat().st_size > 0
    assert main(args + ["--bf16"]) == 2
    assert "float32" in capsys.readouterr().err


def test_graphs_run_on_the_calling_threads_thread_count(tiny):
    """A live session's render workers compute on one thread each: their onnxruntime runs go through a one-thread
    session, while a thread with torch's full count keeps its own; frames alike either way."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    def one_thread():  # as the render pool's workers limit themselves
        torch.get_num_threads()
        threadpool_limits(1, user_api="openmp")

    threads = torch.get_num_threads()  # the suite's workers run on one thread: two here, so the counts differ
    torch.set_num_threads(2)
    try:
        _, _, folder = tiny
        onnx_renderer = OnnxRenderer(folder)
        source = onnx_renderer.encode_source(torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5)))
        rng = torch.Generator().manual_seed(6)
        motion = source.motion + 0.3 * torch.randn(2, source.motion.shape[1], generator=rng)
        frames = onnx_renderer.render(source, motion)
        assert onnx_renderer.frames_graph.thread_counts == [2]
        with ThreadPoolExecutor(1, initializer=one_thread) as worker:
            worker_frames = worker.submit(onnx_renderer.render, source, motion).result()
        assert 1 in onnx_renderer.frames_graph.thread_counts
        torch.testing.assert_close(worker_frames, frames, atol=ATOL, rtol=0)
        fixed = OnnxRenderer(folder, threads=2)  # a thread count given is kept whatever the caller's
        with ThreadPoolExecutor(1, initializer=one_thread) as worker:
            worker.submit(fixed.render, source, motion).result()
        assert fixed.frames_graph.thread_counts == [2]
    finally:
        torch.set_num_threads(threads)


def test_a_pool_of_render_workers_makes_their_one_thread_sessions_up_front(weights, exported):
    """Not on a live session's first hop: the pool's workers and the sampling beside them run on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = AudioDrivenPipeline.from_pretrained(weights, backend="onnxruntime", onnx_dir=exported)
        graphs = [graph for network in (pipe.renderer, pipe.generator, pipe.audio_encoder)
                  for graph in network.per_frame_graphs()]
        assert len(graphs) >= 4 and all(graph.thread_counts == [2] for graph in graphs)
        pipe.render_pool(1)  # one worker keeps torch's thread count
        assert all(graph.thread_counts == [2] for graph in graphs)
        pipe.render_pool(2)
        assert all(graph.thread_counts == [1, 2] for graph in graphs)
        assert pipe.renderer.source_graph.thread_counts == [2]  # once per portrait, on the session's thread
    finally:
        torch.set_num_threads(threads)


def test_live_session_backends_make_the_same_frames(weights, exported):
    """An always-on live session (idle frames, then speech in pieces) on either backend."""
    from helpers.server import FAST, drawn_portrait, voice
    from imtalker.pipelines.live import LiveSession
    from imtalker.pipelines.streaming import StreamingSession

    def run(pipe):
        source = pipe.prepare_source(drawn_portrait(), crop=False)
        live = LiveSession(StreamingSession(pipe, source, hop=5, lookahead_frames=2, batch_size=5, **FAST))
        frames = [frame for k in range(10) for frame in live.tick(now=k / 25)]  # idle: no speech yet
        for piece in np.array_split(voice(0.6), 3):
            frames += list(live.push(piece))
        frames += list(live.finish())
        return np.stack([frame.image for frame in frames])

    torch_frames = run(AudioDrivenPipeline.from_pretrained(weights))
    onnx_frames = run(AudioDrivenPipeline.from_pretrained(weights, backend="onnxruntime", onnx_dir=exported))
    # idle frames not yet shown when speech arrives give way to it, so the 0.6 s of speech (15 frames) is the floor
    assert onnx_frames.shape == torch_frames.shape and len(onnx_frames) >= 15
    assert np.abs(onnx_frames.astype(int) - torch_frames.astype(int)).max() <= 1


def check_audio_encoder_parity(encoder, onnx_encoder, cases) -> None:
    """Features of (batch, samples) clips of a voice-like ramp of noise, normalised by the encoder or not, at 1e-4."""
    rng = torch.Generator().manual_seed(0)
    for batch, samples in cases:
        waveform = torch.randn(batch, samples, generator=rng) * torch.linspace(0.1, 1, samples)
        frames = -(-samples * 25 // 16000)
        for normalize in (True, False):
            with torch.inference_mode():
                expected = encoder(waveform, frames, normalize=normalize)
            torch.testing.assert_close(onnx_encoder(waveform, frames, normalize=normalize), expected, atol=ATOL,
                                       rtol=0)


def test_log_mel_front_end_graph_matches_pytorch(tmp_path):
    """The STFT as a convolution over DFT kernels, in onnxruntime, against torch.stft's features: every clip length
    (reflect or zero padding, one to many spectrogram frames), a batch, normalised here or not."""
    torch.manual_seed(2)
    encoder = MelAudioEncoder(MEL).eval()
    export_onnx(tmp_path, audio_encoder=encoder)
    manifest = read_manifest(tmp_path)
    assert manifest["graphs"]["audio_features"]["dynamic_axes"] == {
        "padded_waveform": {"0": "batch", "1": "samples"}, "features": {"0": "batch", "1": "frames"}}
    onnx_encoder = onnx_audio_encoder(tmp_path)
    assert isinstance(onnx_encoder, OnnxMelEncoder) and onnx_encoder.feature_dim == encoder.feature_dim
    check_audio_encoder_parity(encoder, onnx_encoder, ((1, 100), (1, 300), (2, 8000), (1, 16000 * 3 + 17)))
    with pytest.raises(ValueError, match="finite"):  # the same input checks as the PyTorch encoder
        onnx_encoder(torch.full((1, 400), float("nan")), 1)


def test_pipeline_with_the_log_mel_front_end_runs_it_in_onnxruntime(tmp_path):
    weights = save_tiny_weights(tmp_path / "weights", front_end="mel")
    assert main(["export-onnx", str(weights), str(tmp_path / "onnx")]) == 0
    assert {"renderer", "generator", "audio_encoder"} <= set(read_manifest(tmp_path / "onnx"))
    pipe = AudioDrivenPipeline.from_pretrained(weights, backend="onnxruntime", onnx_dir=tmp_path / "onnx")
    assert isinstance(pipe.audio_encoder, OnnxMelEncoder)
    image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    audio = write_speech(tmp_path / "speech.wav", 0.6)
    options = dict(crop=False, seed=0, nfe=3)
    onnx_frames = np.stack(list(pipe.frames(image, audio, **options)))
    torch_frames = np.stack(list(AudioDrivenPipeline.from_pretrained(weights).frames(image, audio, **options)))
    assert onnx_frames.shape == torch_frames.shape and np.abs(onnx_frames.astype(int) - torch_frames).max() <= 1



def test_wav2vec2_front_end_graphs_match_pytorch(tmp_path):
    """wav2vec2 as two graphs, its convolutions and its transformer, with the published model's resampling to the
    frame count between them, against `AudioEncoder`: clip lengths, a batch, normalised here or not."""
    from helpers.tiny_models import WAV2VEC2
    from imtalker.models.audio import AudioEncoder

    torch.manual_seed(3)
    encoder = AudioEncoder(WAV2VEC2).eval()
    assert main(["export-onnx", str(save_tiny_weights(tmp_path / "weights")), str(tmp_path / "onnx")]) == 0
    manifest = read_manifest(tmp_path / "onnx")
    assert manifest["audio_encoder"]["front_end"] == "wav2vec2"
    assert {"wav2vec2_conv", "wav2vec2_frames"} <= set(manifest["graphs"])
    export_onnx(tmp_path / "alone", audio_encoder=encoder)
    onnx_encoder = onnx_audio_encoder(tmp_path / "alone")
    assert isinstance(onnx_encoder, OnnxWav2Vec2Encoder) and onnx_encoder.feature_dim == encoder.feature_dim
    check_audio_encoder_parity(encoder, onnx_encoder, ((1, 700), (2, 8000), (1, 16000 * 3 + 17)))
