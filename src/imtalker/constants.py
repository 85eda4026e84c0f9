"""Fixed facts of the IMTalker data pipeline (docs/architecture.md §4, §5.1)."""

SAMPLE_RATE = 16000  # audio samples per second fed to the audio encoder
FPS = 25  # video frames per second; one motion latent per frame
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CLIP_FRAMES = 50  # frames the generator samples at once (2 s)
PREV_FRAMES = 10  # frames of context carried from one chunk to the next
MOTION_DIM = 32  # size of a motion latent
DEFAULT_CFG_SCALE = 3.0  # audio guidance of the published inference
DEFAULT_NFE = 10  # points of the sampler's Euler time grid (nfe - 1 steps)
LIVE_HOP_FRAMES = 5  # frames a live stream commits at a time (200 ms)
LIVE_LOOKAHEAD_FRAMES = 2  # audio after a hop that must have arrived before it is committed (80 ms)
# a live hop committed more than this long after its audio came catches up (every other frame rendered, or fewer);
# a session that keeps up commits each hop within its generator step of the audio
LIVE_MAX_LAG_SECONDS = 0.2
