"""BCI decoding: binned neural activity -> 2-D (or d-D) kinematics, offline fit, online one bin at a time.

Modules:
    binning   causal spike binning (AER events -> counts per bin), online binner
    features  unit selection and z-scoring, lagged (history) design matrices
    kernels   numba kernels of the per-bin step (linear/steady-state and full Kalman)
    wiener    Wiener filter (least squares / ridge on lagged bins)
    kalman    Kalman filter in the Wu et al. form used by Neural_Decoding, steady-state fast path
    smooth    Wiener filter followed by a steady-state Kalman smoother (the causal "best" decoder)
    snn       spiking implementation of a fitted linear decoder on the SNN runtime
    evaluate  the ``bci eval`` contract: contiguous K-fold cross-validation, R^2 per axis
    model_io  save/load of fitted decoders to .npz (no pickle)
    motor     decoded velocity -> differential-drive wheel speeds or joint velocities
    replay    an in-memory AER spike array replayed as a pipeline Source (paced or fast)
"""
