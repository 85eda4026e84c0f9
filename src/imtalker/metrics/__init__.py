"""Metrics of generated talking faces, shared by training (validation) and evaluation (`imtalker eval`).

One module per family: `pixels` (PSNR, SSIM, LMD, correlation: no weights), `lpips`, `inception` (FID's features),
`i3d` (FVD's features), `frechet` (the distance FID and FVD share), `arcface` (CSIM), `syncnet` (Sync-C/D). The
networks are ours, in the layouts of the published weight files, which the user supplies (`files`).
"""

from .pixels import landmark_distance, pearson, psnr, ssim

__all__ = ["landmark_distance", "pearson", "psnr", "ssim"]
