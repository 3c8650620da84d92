"""The JAX side of the gradient checks (tests/test_train_gradients.py, tests/test_train_conv.py): written
from the surrogate formulas, independent of the numba kernels. Import it after ``pytest.importorskip("jax")``."""
import jax
import jax.numpy as jnp


def jax_surrogate(kind: str, slope: float):
    """The Heaviside step with the surrogate derivative d spike / dx as its JVP (x = v / threshold - 1)."""
    @jax.custom_jvp
    def spike(x):
        return (x > 0).astype(jnp.float32)

    @spike.defjvp
    def _(primals, tangents):
        (x,), (dx,) = primals, tangents
        if kind == "fast_sigmoid":
            d = 1.0 / (1.0 + slope * jnp.abs(x)) ** 2
        elif kind == "arctan":
            d = 1.0 / (1.0 + (0.5 * jnp.pi * slope * x) ** 2)
        else:
            d = jnp.maximum(0.0, 1.0 - slope * jnp.abs(x))
        return spike(x), d * dx
    return spike
