"""configs/paper_caffe.py against an independent port of the official update loop (lyttonhao/Neural-Style-MMD).

The oracle (:class:`OfficialRun`) is PyTorch in float64 with its own VGG-19 forward pass (torchvision's
``vgg19().features`` with average pooling, loaded from the same random ``.pth`` that the converter turns into
the nst_jax file with ``--source=caffe``). Its style gradients are the official custom ops' backward formulas
(mmd_loss.py, bn_loss.py), written out here and pulled back through VGG by autograd; its energies are the
stated ones (PAPER_SPEC "Style energies per layer"), from raw sums rather than nst_jax's normalised
statistics. Around them: the clip to L2 norm 3 H W, the TV gradient as the official convolution, MXNet's
momentum SGD with weight decay and FactorScheduler, and the early stop. Nothing of nst_jax's losses or
optimisers is used; what the two share is the initial image and, for the Gaussian, the random pairs (the
random streams are not the official ones; the README says so).

Each of the run's 20 steps is compared with the oracle's step from the same image (the oracle keeps its
own momentum and schedule): the energies, the image it makes and the update, relative, max over steps.
Size: 32 x 48 px rather than the issue's 64 px long edge: the float64 oracle takes about 1.2 s a step at
48 x 64 on the shared 2-core machine, and the seven runs take 2.5-3 minutes at 32 x 48 already; relu5_1 is
still 2 x 3 there. Each method compiles one step (chunks of one).
``python -m pytest tests/test_paper.py -k step_for_step -s`` prints a table row per run: steps, then the
relative differences of content energy, style energy, image (max over steps), final image, update.
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import paper_caffe
from nst_jax import config as config_lib
from nst_jax import demo, image, job, loop, losses, optimizers, transfer
from nst_jax import weights as weights_lib
from nst_jax.errors import ConfigError
from tests.conftest import run_converter

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

HW = (32, 48)
STEPS = 20
TOL = 1e-4
# Index of each used layer's ReLU in torchvision's vgg19().features.
LAYER_INDEX = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# The official per-method constants (neural-style.py's w_style).
W_STYLE = {"linear": 2e3, "poly": 1e-1, "gaussian": 3e14, "bn": 1e3}


# ---------------------------------------------------------------------------------------------------------
# The oracle.


def official_tv(x: torch.Tensor) -> torch.Tensor:
    """conv(x, [[0,-1,0],[-1,4,-1],[0,-1,0]] / 8) on each channel with zero padding: (H, W, 3) -> (H, W, 3)."""
    kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=x.dtype) / 8.0
    out = torch.nn.functional.conv2d(x.permute(2, 0, 1)[None], kernel.expand(3, 1, 3, 3), padding=1, groups=3)
    return out[0].permute(1, 2, 0)


def torch_vgg_avg(pth: str) -> torch.nn.Sequential:
    """torchvision's VGG-19 features up to relu5_1 with the .pth's weights, average pooling, float64."""
    net = torchvision.models.vgg19(weights=None)
    net.load_state_dict(torch.load(pth, weights_only=True))
    layers = []
    for layer in list(net.features)[: LAYER_INDEX["relu5_1"] + 1]:
        if isinstance(layer, torch.nn.MaxPool2d):
            layer = torch.nn.AvgPool2d(2, 2)
        elif isinstance(layer, torch.nn.ReLU):
            layer = torch.nn.ReLU(inplace=False)  # each layer's output is kept
        layers.append(layer)
    return torch.nn.Sequential(*layers).double().eval().requires_grad_(False)


def samples(f: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H*W, C): rows are positions, as after the official code's Reshape and SwapAxis."""
    return f[0].reshape(f.shape[1], -1).T


def linear_op(x, y, scale):
    """Official linear op: d = 1 (sum x - sum y)^T; the energy whose gradient it is, 1/2 ||sum x - sum y||^2."""
    diff = x.sum(0) - y.sum(0)
    return scale * 0.5 * diff.dot(diff), scale * diff.expand_as(x)


def poly_op(x, y, scale, c):
    """Official poly op: d = x (x^T x - y^T y) + c 1 (sum x - sum y)^T; energy 1/4 ||x^T x - y^T y||^2 +
    c/2 ||sum x - sum y||^2."""
    g = x.T @ x - y.T @ y
    diff = x.sum(0) - y.sum(0)
    energy = 0.25 * (g * g).sum() + 0.5 * c * diff.dot(diff)
    return scale * energy, scale * (x @ g + c * diff.expand_as(x))


def gaussian_op(x, y, scale, perm_x, perm_y):
    """Official Gaussian op on the pairs of the permutations: gamma = 2 n0 / (sum of the 4K squared distances),
    d_x0 = gamma (-k(x0,x1)(x0 - x1) + k(x0,y1)(x0 - y1)), ...; energy h / 2 (gamma held constant)."""
    m = x.shape[0]
    n0 = m - (m & 1)
    i0, i1 = perm_x[0:n0:2], perm_x[1:n0:2]
    j0, j1 = perm_y[0:n0:2], perm_y[1:n0:2]
    x0, x1, y0, y1 = x[i0], x[i1], y[j0], y[j1]
    dxx, dyy = ((x0 - x1) ** 2).sum(1), ((y0 - y1) ** 2).sum(1)
    dxy, dyx = ((x0 - y1) ** 2).sum(1), ((y0 - x1) ** 2).sum(1)
    gamma = n0 * 2 / (dxx.sum() + dyy.sum() + dxy.sum() + dyx.sum())
    kxx, kyy, kxy, kyx = (torch.exp(-gamma * d)[:, None] for d in (dxx, dyy, dxy, dyx))
    h = (kxx + kyy - kxy - kyx).sum()
    d = torch.zeros_like(x)
    d[i0] = gamma * (-kxx * (x0 - x1) + kxy * (x0 - y1))
    d[i1] = gamma * (-kxx * (x1 - x0) + kyx * (x1 - y0))
    return scale * 0.5 * h, scale * d


def bn_op(x, y, scale):
    """Official BN op (grad_scale / N folded into ``scale``): d = (1/M) [(mu_x - mu_y) + (sd_x - sd_y) / sd_x
    (x - mu_x)]; energy 1/2 sum_c [(mu_x - mu_y)^2 + (sd_x - sd_y)^2]. A channel with sd_x = 0 gets 0 where the
    official code divides by 0 (its NaN, a defect nst_jax does not reproduce)."""
    m = x.shape[0]
    mx, my = x.mean(0), y.mean(0)
    sx, sy = ((x - mx) ** 2).mean(0).sqrt(), ((y - my) ** 2).mean(0).sqrt()
    ratio = torch.where(sx > 0, (sx - sy) / torch.where(sx > 0, sx, 1.0), 0.0)
    d = ((mx - my) + ratio * (x - mx)) / m
    energy = 0.5 * (((mx - my) ** 2).sum() + ((sx - sy) ** 2).sum())
    return scale * energy, scale * d


class OfficialRun:
    """The official update loop (neural-style.py's train_nstyle) on preprocessed images (H, W, 3), float64.

    ``methods``: [(name, fusion weight)], names linear, poly, gaussian, bn (the Gram method is poly with c = 0).
    ``pairs(step, layer_index, term_index, m)`` gives the Gaussian's two permutations of range(m).
    """

    def __init__(self, net, content, style, methods, style_weight, c, pairs):
        self.net, self.methods, self.s, self.c, self.pairs = net, methods, style_weight, c, pairs
        self.content_target = self.features(content)["relu4_2"]
        self.style_targets = {k: samples(v) for k, v in self.features(style).items() if k in STYLE_LAYERS}

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, h = {}, x.permute(2, 0, 1)[None]
        wanted = {i: name for name, i in LAYER_INDEX.items()}
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def energies_and_gradient(self, x: torch.Tensor, step: int) -> tuple[float, float, torch.Tensor]:
        """Content energy, style energy and the VGG gradient (H, W, 3) at x."""
        x = x.detach().requires_grad_(True)
        feats = self.features(x)
        p = feats["relu4_2"] - self.content_target
        outputs, heads = [feats["relu4_2"]], [2.0 * p]  # content weight 1, no 1/2
        content = float((p * p).sum().detach())
        style = 0.0
        for li, name in enumerate(STYLE_LAYERS):
            f = feats[name]
            xs, ys = samples(f), self.style_targets[name]
            m, n = xs.shape
            grad = torch.zeros_like(xs)
            for ti, (method, weight) in enumerate(self.methods):
                # neural-style.py: style weight * w_style / (N M) (poly: / (N^2 M)); bn: * M, and / N in its op.
                scale = self.s * weight * W_STYLE[method]
                if method == "bn":
                    value, d = bn_op(xs, ys, scale * m / n)
                elif method == "poly":
                    value, d = poly_op(xs, ys, scale / (n * n * m), self.c)
                elif method == "linear":
                    value, d = linear_op(xs, ys, scale / (n * m))
                else:
                    perm_x, perm_y = self.pairs(step, li, ti, m)
                    value, d = gaussian_op(xs, ys, scale / (n * m), perm_x, perm_y)
                style += float(value.detach())
                grad = grad + d
            outputs.append(f)
            heads.append(grad.T.reshape(f.shape))
        torch.autograd.backward(outputs, heads)
        return content, style, x.grad.detach()

    def update(self, x: torch.Tensor, mom: torch.Tensor, t: int, lr: float) -> tuple[torch.Tensor, ...]:
        """One iteration of the official loop at step t: (new image, new momentum, content and style energy
        before the update, the relative change)."""
        content, style, g = self.energies_and_gradient(x, t)
        clip = x.numel()  # clip_norm = np.prod(img.shape) = 3 H W
        norm = float(g.norm())
        if norm > clip:
            g = g * (clip / norm)
        g = g + 0.01 * official_tv(x)
        mom = 0.9 * mom - lr * (g + 5e-4 * x)  # MXNet's SGD: momentum 0.9, wd 5e-4, the rate inside
        new = x + mom
        return new, mom, content, style, float((new - x).norm() / new.norm())

    def follow(self, images: list[torch.Tensor], stop_eps: float = 0.005) -> dict[str, list]:
        """The official loop stepped from each of a run's images x_0, x_1, ... in turn, with its own momentum
        and learning-rate schedule: per step the energies at x_t, the image x_t + v_t+1 it makes of x_t, and
        whether its early stop fires there (it stops there, as the official loop)."""
        mom, schedule = torch.zeros_like(images[0]), FactorScheduler(1e-3)
        out = {"content": [], "style": [], "x": [], "stop": []}
        for t, x in enumerate(images[:-1]):
            new, mom, content, style, eps = self.update(x, mom, t, schedule(t))
            for name, value in (("content", content), ("style", style), ("x", new), ("stop", eps < stop_eps)):
                out[name].append(value)
            if eps < stop_eps:
                break
        return out


class FactorScheduler:
    """MXNet's FactorScheduler(step=80, factor=0.9), called as MXNet's SGD of the time called it: with the
    number of updates done before the current one."""

    def __init__(self, base_lr: float, step: int = 80, factor: float = 0.9):
        self.base_lr, self.step, self.factor, self.count = base_lr, step, factor, 0

    def __call__(self, num_update: int) -> float:
        if num_update > self.count + self.step:
            self.count += self.step
            self.base_lr *= self.factor
        return self.base_lr


def nst_pairs(loop_key: jax.Array):
    """The Gaussian's permutations exactly as nst_jax draws them (transfer.chunk's fold_in(key, step), then
    fused_style_loss's fold_in(layer), fold_in(term), then linear_time_pairs' split)."""

    def pairs(step: int, layer: int, term: int, m: int):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(loop_key, step), layer), term)
        kx, ky = jax.random.split(key)
        return (torch.tensor(np.asarray(jax.random.permutation(kx, m)), dtype=torch.long),
                torch.tensor(np.asarray(jax.random.permutation(ky, m)), dtype=torch.long))

    return pairs


# ---------------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def caffe_weights(random_pth, tmp_path_factory) -> weights_lib.Weights:
    """The random .pth converted with the Caffe layout (as jcjohnson's vgg19-d01eb7cb.pth would be)."""
    path = str(tmp_path_factory.mktemp("caffe") / "vgg19-random-caffe.msgpack")
    proc = run_converter("--source=caffe", f"--checkpoint={random_pth}", f"--output={path}")
    assert proc.returncode == 0, proc.stderr
    return weights_lib.load(path)


@pytest.fixture(scope="module")
def oracle_net(random_pth):
    return torch_vgg_avg(random_pth)


@pytest.fixture(scope="module")
def images():
    return (image.resize(demo.content_image(128), HW), image.resize(demo.style_image(128), HW))


def paper_config(kernel: str, **fields):
    c = paper_caffe.get_config()
    c.kernel = kernel
    c.steps = STEPS
    c.log_every = 1
    c.chunk = 1  # one compiled step per method (CPU compile time); results do not depend on it
    c.sgd.denoise = 0.0  # compared before saving; the denoising has its own test
    for name, value in fields.items():
        c[name] = value
    return c


def run_paper(config, weights, content_rgb, style_rgb) -> tuple[dict, list[np.ndarray]]:
    """``job.run`` of a (checked) config in chunks of one step: the record and the images x_0, x_1, ... in the
    preprocessed space, unclipped."""
    keys = job.keys(config.seed)
    states = [np.asarray(job.initial_image(config.init, content_rgb, keys.init, weights.source))]

    def keep(c: loop.Chunk) -> bool:
        states.append(np.array(c.state.x, copy=True))  # a copy: the next chunk reuses the donated buffers
        return False

    spec = config_lib.parse(config)
    ((_, record),) = job.run(spec.problem(), spec.settings(weights.source), spec.chunk_length(),
                             [job.JobInputs(spec, content_rgb, [style_rgb], "demo content", ["demo style"])],
                             weights, after_chunk=keep)
    return record, states


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ---------------------------------------------------------------------------------------------------------
# The run against the oracle.

# (--kernel, --kernel_weights, the oracle's methods, the early stop's tolerance): Gram is the official poly
# with c = 0, and the paper config's poly has c = 0 too; bn,poly is run.sh's fusion with style weight 5 (the
# intended fusion rule). The official tolerance 0.005 does not fire within 20 steps here (the relative change
# falls from 0.55 to 0.07): the last case raises it to 0.32, between steps 3 (0.35) and 4 (0.30).
CASES = {
    "gram": ("gram", "", [("poly", 1.0)], 0.005),
    "linear": ("linear", "", [("linear", 1.0)], 0.005),
    "poly": ("poly", "", [("poly", 1.0)], 0.005),
    "gaussian": ("gaussian", "", [("gaussian", 1.0)], 0.005),
    "bn": ("bn", "", [("bn", 1.0)], 0.005),
    "bn,poly": ("bn,poly", "0.5,0.5", [("bn", 0.5), ("poly", 0.5)], 0.005),
    "linear, early stop": ("linear", "", [("linear", 1.0)], 0.32),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow
def test_paper_config_follows_the_official_loop_step_for_step(case, caffe_weights, oracle_net, images):
    """Each step of the paper config's run against the official loop's step from the same image.

    Step for step rather than two free runs side by side: float32 (nst_jax) and float64 (the oracle) put a
    pre-activation within rounding of 0 on different sides of its ReLU now and then (at identical input the
    two gradients then differ by up to about 1e-3), and a free run carries each such step on. Within a
    step the update agrees to about 1e-7, and to about 5e-4 on a step with such a flip."""
    kernel, kernel_weights, oracle_methods, stop_tol = CASES[case]
    config = paper_config(kernel, kernel_weights=kernel_weights)
    config.sgd.stop_tol = stop_tol
    config_lib.check(config)
    content_rgb, style_rgb = images
    record, xs = run_paper(config, caffe_weights, content_rgb, style_rgb)
    as_torch = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    # run.sh's style weights: 1 for bn alone, 5 otherwise
    oracle = OfficialRun(oracle_net, as_torch(image.preprocess(jnp.asarray(content_rgb), "caffe")),
                         as_torch(image.preprocess(jnp.asarray(style_rgb), "caffe")), oracle_methods,
                         style_weight=1.0 if kernel == "bn" else 5.0, c=0.0,
                         pairs=nst_pairs(job.keys(config.seed).loop))
    want = oracle.follow([as_torch(x) for x in xs], stop_eps=stop_tol)

    steps = record["steps_run"]
    assert len(want["x"]) == steps and record["stopped_early"] == want["stop"][-1] == (stop_tol > 0.1)
    got = {k: v[:steps] for k, v in record["losses"].items()}  # each step's energy (the last entry is the final)
    assert record["losses"]["step"] == [*range(steps), steps]
    content = max(abs(a / b - 1) for a, b in zip(got["content"], want["content"], strict=True))
    style = max(abs(a / b - 1) for a, b in zip(got["style"], want["style"], strict=True))
    images_diff = [rel(xs[t + 1], want["x"][t].numpy()) for t in range(steps)]
    updates = [rel(xs[t + 1] - xs[t], want["x"][t].numpy() - xs[t]) for t in range(steps)]
    print(f"\n| {case} | {steps} | {content:.1e} | {style:.1e} | {max(images_diff):.1e} | {images_diff[-1]:.1e} "
          f"| {max(updates):.1e} |")
    assert content < TOL and style < TOL and max(images_diff) < TOL, (content, style, images_diff)
    assert max(updates) < 100 * TOL, updates  # a ReLU flip moves one step by up to about 5e-4
    assert rel(xs[-1], xs[0]) > 0.5  # the image moved: not two untouched starts compared


# ---------------------------------------------------------------------------------------------------------
# The pieces.


def test_official_tv_gradient_is_the_official_convolution():
    x = np.random.default_rng(0).normal(0.0, 50.0, (13, 17, 3)).astype(np.float32)
    got = np.asarray(jax.jit(optimizers.official_tv_gradient)(x))
    want = official_tv(torch.from_numpy(x.astype(np.float64))).numpy()
    assert np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))
    # ... which is 1/16 of the gradient of the squared TV with a zero border (losses.total_variation's docstring)
    tv = np.asarray(jax.grad(lambda y: losses.total_variation(y, boundary="zero"))(jnp.asarray(x)))
    np.testing.assert_allclose(got, tv / 16.0, rtol=0, atol=1e-6 * np.max(np.abs(want)))
    # paper_gradient adds it after clipping, with its weight
    g = np.full_like(x, 1e6)
    step = np.asarray(optimizers.paper_gradient(jnp.asarray(g), jnp.asarray(x), 3.0, 0.01, "official"))
    clipped = g * (3.0 * 13 * 17 / np.linalg.norm(g))
    np.testing.assert_allclose(step, clipped + 0.01 * want, rtol=1e-5, atol=1e-4)


def test_official_noise_is_uniform_around_the_mean_pixel():
    content = np.zeros((200, 300, 3), np.float32)
    key = job.keys(7).init
    x = np.asarray(job.initial_image("official_noise", content, key, "caffe"), np.float64)
    assert x.shape == content.shape
    n = x.size
    assert -0.1 <= x.min() < -0.0999 and 0.0999 < x.max() <= 0.1
    assert abs(x.mean()) < 4 * np.sqrt(0.01 / 3 / n)  # uniform(-0.1, 0.1): mean 0, variance 0.01 / 3
    assert abs(x.var() / (0.01 / 3) - 1) < 0.02
    # per channel too, and the image is the mean pixel: RGB (123.68, 116.779, 103.939) / 255 +- 0.1 / 255
    assert np.all(np.abs(x.reshape(-1, 3).mean(0)) < 4 * np.sqrt(0.01 / 3 / (n / 3)))
    rgb = np.asarray(image.deprocess(jnp.asarray(x, jnp.float32), "caffe"), np.float64)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), np.asarray(image.CAFFE_MEAN_RGB) / 255, atol=1e-5)
    assert np.max(np.abs(rgb - np.asarray(image.CAFFE_MEAN_RGB) / 255)) <= 0.1 / 255 + 1e-6
    # seeded by the init key
    again = np.asarray(job.initial_image("official_noise", content, key, "caffe"))
    other = np.asarray(job.initial_image("official_noise", content, job.keys(8).init, "caffe"))
    assert np.array_equal(again, x.astype(np.float32)) and not np.array_equal(again, other)


def mxnet_sgd_numpy(grad_fn, x, steps, lr=1e-3, momentum=0.9, wd=5e-4, step=80, factor=0.9):
    """MXNet's SGD with FactorScheduler, as the official code ran it (float64)."""
    mom, count, out = np.zeros_like(x), 0, []
    for t in range(steps):
        if t > count + step:
            count += step
            lr *= factor
        mom = momentum * mom - lr * (grad_fn(x) + wd * x)
        x = x + mom
        out.append(x)
    return np.stack(out)


def test_mxnet_rule_is_mxnet_sgd_across_the_decays():
    sgd = optimizers.SGDSettings(update_rule="mxnet")
    rates = [float(optimizers.mxnet_schedule(sgd)(jnp.int32(t))) for t in (0, 1, 80, 81, 160, 161, 241)]
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-3, 9e-4, 9e-4, 8.1e-4, 7.29e-4], rtol=1e-6)

    # A constant slope: the momentum buffer is full when the rate decays, where the two rules differ most.
    slope = np.linspace(-3.0, 5.0, 12)
    grad_fn = lambda x: slope + 0.0 * x  # noqa: E731

    def run(opt, x):
        def body(carry, _):
            x, state = carry
            updates, state = opt.update(grad_fn(x), state, x)
            return (x + updates, state), x + updates
        return jax.lax.scan(body, (x, opt.init(x)), None, length=250)[1]

    x0 = jnp.zeros(12, jnp.float32)
    want = mxnet_sgd_numpy(grad_fn, np.zeros(12), 250)
    scale = np.abs(want).max()
    mxnet = optimizers.make("sgd_paper", transfer.StepSettings(steps=0, low=(0,) * 3, high=(0,) * 3, sgd=sgd))
    np.testing.assert_allclose(np.asarray(run(mxnet, x0)), want, rtol=0, atol=2e-5 * scale)
    # optax's rule (the default config) agrees until the first decay and differs after it
    default = optimizers.make("sgd_paper", transfer.StepSettings(steps=0, low=(0,) * 3, high=(0,) * 3))
    other = np.asarray(run(default, x0))
    np.testing.assert_allclose(other[:80], want[:80], rtol=0, atol=2e-5 * scale)
    assert np.max(np.abs(other[80:] - want[80:])) > 100 * 2e-5 * scale


@pytest.mark.slow
def test_projection_can_be_turned_off(caffe_weights):
    """With sgd.project=False (the paper config) the image may leave the pixel range while optimising."""
    rgb = np.full((16, 16, 3), 0.5, np.float32)
    x_rgb = image.preprocess(jnp.asarray(rgb), "caffe")
    x0 = jnp.full((16, 16, 3), 500.0, jnp.float32)  # beyond RGB 1 (at most 151.1) in every channel
    out = {}
    for project in (True, False):
        config = paper_config("linear", steps=1)
        config.sgd.project = project
        problem, settings = config_lib.problem(config), config_lib.step_settings(config, "caffe")
        params = caffe_weights.params
        tgt = transfer.targets(problem, params, x_rgb, [x_rgb])
        scales = {"content": jnp.float32(1.0),
                  "style": {k: jnp.float32(v) for k, v in transfer.paper_scales(problem, params, x0).items()}}
        state, _ = jax.jit(transfer.chunk, static_argnums=(0, 1, 2))(
            problem, settings, 1, transfer.init_state(problem, settings, x0), params, tgt, scales, jax.random.key(0))
        out[project] = np.asarray(state.x)
    assert np.all(out[True] <= np.asarray(settings.high) + 1e-4)
    assert np.all(out[False] > 400.0)


# ---------------------------------------------------------------------------------------------------------
# The config.


def test_paper_config_settings(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # as if scikit-image were there
    c = paper_caffe.get_config()
    config_lib.check(c)
    assert c.poly_c == 0.0 and c.init == "official_noise" and c.balance == "none"
    settings = config_lib.step_settings(c, "caffe")
    assert not settings.project and settings.sgd_tv == "official" and settings.sgd.update_rule == "mxnet"
    assert (settings.clip_per_pixel, settings.sgd_tv_weight, settings.stop_tol) == (3.0, 0.01, 0.005)
    assert config_lib.parse_terms(c)[0].method == losses.Gram()
    weights = {}
    for kernel in ("bn", "BN", "linear", "poly", "gaussian", "gram", "bn,poly", "linear,gaussian"):
        c.kernel = kernel
        weights[kernel] = config_lib.style_weight(c)
    assert weights == {"bn": 1.0, "BN": 1.0, "linear": 5.0, "poly": 5.0, "gaussian": 5.0, "gram": 5.0,
                       "bn,poly": 5.0, "linear,gaussian": 5.0}
    c.kernel, c.style_weight = "bn", 3.0  # an explicit --style_weight holds for every method
    assert config_lib.style_weight(c) == 3.0
    c.style_weight_by_kernel = "bn=1"  # and a bad table is refused all the same
    with pytest.raises(ConfigError, match="style_weight_by_kernel=bn=1: expected method:weight"):
        config_lib.style_weight(c)
    c.style_weight_by_kernel = "bn:1,default:5"
    c.kernel = "poly"
    assert config_lib.parse_terms(c)[0].method.c == 0.0


def test_other_configs_keep_their_settings():
    from configs import default

    c = default.get_config()
    c.optimizer = "sgd_paper"
    s = config_lib.step_settings(c, "torchvision")
    assert s.project and s.sgd_tv == "free" and s.sgd.update_rule == "optax"
    assert config_lib.style_weight(c) == 5.0 and c.sgd.denoise == 0.0


BAD = {
    "update rule": ({"sgd.update_rule": "adam"}, "--config.sgd.update_rule=adam: expected one of optax, mxnet"),
    "tv gradient": ({"sgd.tv_gradient": "zero"}, "--config.sgd.tv_gradient=zero: expected one of free, official"),
    "denoise negative": ({"sgd.denoise": -0.1}, "--config.sgd.denoise=-0.1: must be a finite number >= 0"),
    "denoise with scales": ({"scales": 2}, "--config.sgd.denoise=0.02: the final TV denoising is for single-scale"),
    "no weight for the kernel": ({"style_weight_by_kernel": "bn:1", "kernel": "linear"},
                                 "--style_weight is unset and --config.style_weight_by_kernel='bn:1' has no entry "
                                 "for --kernel=linear nor a default: pass --style_weight"),
    "bad entry": ({"style_weight_by_kernel": "bn=1"}, "--config.style_weight_by_kernel=bn=1: expected method:weight"),
    "unknown method": ({"style_weight_by_kernel": "sobel:1,default:5"},
                       "--config.style_weight_by_kernel=sobel:1,default:5: expected method:weight"),
    "negative weight": ({"style_weight_by_kernel": "bn:-1,default:5"},
                        "--config.style_weight_by_kernel=bn:-1,default:5: expected"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_paper_fields_are_one_line_errors(case, monkeypatch):
    fields, message = BAD[case]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # as if scikit-image were there
    c = paper_caffe.get_config()
    for name, value in fields.items():
        group, _, field = name.rpartition(".")
        (c[group] if group else c)[field] = value
    with pytest.raises(ConfigError) as e:
        config_lib.check(c)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_denoising_needs_scikit_image(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        config_lib.check(paper_caffe.get_config())
    assert str(e.value) == ("--config.sgd.denoise=0.02 needs scikit-image (pip install -e '.[paper]'); or pass "
                            "--config.sgd.denoise=0")
    c = paper_caffe.get_config()
    c.sgd.denoise = 0.0
    config_lib.check(c)


@pytest.mark.slow
def test_the_saved_image_is_tv_denoised(caffe_weights, images):
    pytest.importorskip("skimage")
    from skimage.restoration import denoise_tv_chambolle

    content_rgb, style_rgb = images
    out = {}
    for weight in (0.0, 0.02):
        config = paper_config("linear", steps=2)
        config.sgd.denoise = weight
        spec = config_lib.parse(config)
        ((out[weight], _),) = job.run(spec.problem(), spec.settings("caffe"), 1,
                                      [job.JobInputs(spec, content_rgb, [style_rgb], "c", ["s"])], caffe_weights)
    want = np.clip(denoise_tv_chambolle(out[0.0].astype(np.float64), weight=0.02, channel_axis=-1), 0, 1)
    np.testing.assert_allclose(out[0.02], want, atol=1e-6)
    assert np.abs(out[0.02] - out[0.0]).max() > 1e-4
    assert image.denoise(out[0.0], 0.0) is out[0.0]
