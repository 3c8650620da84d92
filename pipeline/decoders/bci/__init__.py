"""BCI decoding: binned neural activity -> 2-D (or d-D) kinematics, offline fit, online one bin at a time.

The data (BinnedData, DAD/MC_Maze readers, spike replay) lives in recordings/; this package:
    features  input checks, unit selection and z-scoring, lagged (history) design matrices
    kernels   numba kernels of the per-bin step (LTI / steady-state Kalman and full Kalman)
    base      the online API shared by all decoders (reset / step / predict, .npz arrays)
    linear    decoders that are LTI systems on the lagged bins
    wiener    Wiener filter (least squares / ridge on lagged bins, ridge chosen by inner CV)
    kalman    Kalman filter in the Wu et al. form used by Neural_Decoding, steady-state fast path
    snn       spiking implementation of the current-bin Wiener filter on the SNN runtime (loihi / float)
    factory   decoders by name (wiener, kalman, ridge, snn), for the CLI and launch files
    evaluate  the ``bci eval`` contract: contiguous K-fold cross-validation, R^2 per axis
    model_io  save/load of fitted decoders to .npz (no pickle)
    motor     decoded velocity -> differential-drive wheel speeds or joint velocities (the decode step)

Spike counts per bin come from pipeline.stages.binning.CountBinner; a fitted decoder is the loop's stepper
(``step(counts) -> kinematics``), a motor mapping its decode step.
"""
