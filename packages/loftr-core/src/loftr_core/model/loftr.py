"""The LoFTR model (Sun et al., CVPR 2021), read top to bottom like the paper's figure:

1. local feature CNN (ResNet-FPN 8/2): coarse 1/8 and fine 1/2 feature maps of both images;
2. positional encoding of the coarse maps, flattened to tokens;
3. coarse local feature transformer (self/cross attention);
4. coarse matching (dual-softmax or optimal transport) -> mutual nearest neighbours;
5. fine preprocessing: windows around each coarse match + coarse feature merge;
6. fine local feature transformer;
7. fine matching: heatmap expectation refines the image-1 points.

``forward`` is inference: it returns a new dict with kornia's keys and never mutates its input.
How the stages are computed (layouts, kernels, chunk sizes, sub-stage precision) is not part of
the model: it comes from :class:`~loftr_core.execution.ExecutionOptions`, handed to the
constructor or to :meth:`LoFTR.set_options`, and is never saved.
``forward_train`` is the explicit training path (dense confidence for the loss, coarse predictions
padded with ground truth for the fine level, spec §5.3). ``state_dict()`` keys are the official
checkpoint keys without the ``matcher.`` prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from loftr_core.errors import ConfigError, InputError
from loftr_core.execution import Execution, ExecutionOptions
from loftr_core.model.backbone import ResNetFPN
from loftr_core.model.coarse_matching import CoarseMatches, CoarseMatching, select_matches
from loftr_core.model.config import LoFTRConfig
from loftr_core.model.fine_matching import fine_expectation, refine_keypoints
from loftr_core.model.fine_preprocess import FinePreprocess
from loftr_core.model.position_encoding import PositionEncodingSine
from loftr_core.model.training import max_candidates, pad_with_ground_truth
from loftr_core.model.transformer import LocalFeatureTransformer

__all__ = ["EncodedImage", "LoFTR"]


@dataclass(frozen=True)
class EncodedImage:
    """What the pair-independent first steps make of one image batch (:meth:`LoFTR.encode`).

    Attributes:
        tokens: ``(N, L, C)`` coarse features with the positional encoding, flattened row-major.
        fine: ``(N, Cf, Hf, Wf)`` fine feature map.
    """

    tokens: Tensor
    fine: Tensor

    @property
    def nbytes(self) -> int:
        """Memory held by the two tensors."""
        return self.tokens.element_size() * self.tokens.nelement() + (
            self.fine.element_size() * self.fine.nelement()
        )


@dataclass(frozen=True)
class _Inputs:
    """Validated inputs: images, flattened coarse masks ``(N, L)``/``(N, S)``, grids, scales."""

    image0: Tensor
    image1: Tensor
    mask0: Tensor | None
    mask1: Tensor | None
    grid0: Tensor | None  # (N, Hc0, Wc0) masks as given, for border removal / budgets
    grid1: Tensor | None
    hw0_c: tuple[int, int]
    hw1_c: tuple[int, int]
    scale0: Tensor | None
    scale1: Tensor | None


@dataclass(frozen=True)
class _Coarse:
    """Coarse transformer outputs and the fine maps."""

    feat0: Tensor  # (N, L, C)
    feat1: Tensor  # (N, S, C)
    fine0: Tensor  # (N, Cf, Hf0, Wf0)
    fine1: Tensor


def _image(data: Mapping[str, Any], key: str) -> Tensor:
    if key not in data:
        raise InputError(f"missing input {key!r}: pass image0 and image1 as (N, 1, H, W) floats")
    img = data[key]
    if not isinstance(img, Tensor) or not img.is_floating_point():
        kind = img.dtype if isinstance(img, Tensor) else type(img).__name__
        raise InputError(f"{key} must be a floating-point torch.Tensor, got {kind}; use img / 255")
    if img.dim() != 4 or img.shape[1] != 1:
        raise InputError(
            f"{key} must have shape (N, 1, H, W) (grayscale), got {tuple(img.shape)}; "
            "convert to grayscale and add batch/channel dims"
        )
    h, w = img.shape[2:]
    if h % 8 or w % 8 or h == 0 or w == 0:
        raise InputError(
            f"{key} height and width must be positive multiples of 8, got {h}x{w}; pad (bottom/"
            "right, with a coarse mask) or resize the image (loftr_core.Matcher does this for you)"
        )
    return img


def _mask(data: Mapping[str, Any], key: str, n: int, hw: tuple[int, int]) -> Tensor | None:
    mask = data.get(key)
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        kind = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(f"{key} must be a bool tensor (True = valid), got {kind}; use mask.bool()")
    if tuple(mask.shape) != (n, *hw):
        raise InputError(
            f"{key} must have the coarse shape (N, H/8, W/8) = {(n, *hw)}, got {tuple(mask.shape)};"
            " downsample a pixel mask with mask[:, ::8, ::8]"
        )
    return mask


def _scale(data: Mapping[str, Any], key: str, n: int) -> Tensor | None:
    scale = data.get(key)
    if scale is None:
        return None
    if not isinstance(scale, Tensor) or tuple(scale.shape) != (n, 2):
        got = tuple(scale.shape) if isinstance(scale, Tensor) else type(scale).__name__
        raise InputError(f"{key} must be a (N, 2) tensor (orig_w/w, orig_h/h), got {got}")
    return scale


def _validate(data: Mapping[str, Any]) -> _Inputs:
    if not isinstance(data, Mapping):
        raise InputError(f"the model input must be a mapping of tensors, got {type(data).__name__}")
    image0, image1 = _image(data, "image0"), _image(data, "image1")
    n = image0.shape[0]
    if image1.shape[0] != n:
        raise InputError(f"image0 and image1 batch sizes differ: {n} vs {image1.shape[0]}")
    hw0 = (image0.shape[2] // 8, image0.shape[3] // 8)
    hw1 = (image1.shape[2] // 8, image1.shape[3] // 8)
    grid0, grid1 = _mask(data, "mask0", n, hw0), _mask(data, "mask1", n, hw1)
    return _Inputs(
        image0,
        image1,
        None if grid0 is None else grid0.reshape(n, -1),
        None if grid1 is None else grid1.reshape(n, -1),
        grid0,
        grid1,
        hw0,
        hw1,
        _scale(data, "scale0", n),
        _scale(data, "scale1", n),
    )


def _cell_xy(ids: Tensor, width: int, stride: float, scale: Tensor | None, b_ids: Tensor) -> Tensor:
    """Pixel ``(x, y)`` of coarse cells (top-left of the 8x8 cell), float32 ``(M, 2)``."""
    xy = torch.stack([ids % width, torch.div(ids, width, rounding_mode="floor")], dim=1)
    xy = xy.to(torch.float32) * stride
    return xy if scale is None else xy * scale[b_ids].to(torch.float32)


class LoFTR(nn.Module):
    """Detector-free local feature matching with transformers.

    Args:
        config: the model configuration (default: ``LoFTRConfig()``, i.e. the original
            ``default.py``; use a preset such as ``LoFTRConfig.outdoor_ds()`` for a checkpoint).
        options: how it runs (default: ``ExecutionOptions()``; ``ExecutionOptions.reference()``
            for the original's rounding). Not part of the model, never saved.
    """

    def __init__(
        self, config: LoFTRConfig | None = None, options: ExecutionOptions | None = None
    ) -> None:
        super().__init__()
        config = LoFTRConfig() if config is None else config
        if not isinstance(config, LoFTRConfig):
            raise ConfigError(f"config must be a LoFTRConfig, got {type(config).__name__}")
        options = ExecutionOptions() if options is None else options
        if not isinstance(options, ExecutionOptions):
            raise ConfigError(f"options must be an ExecutionOptions, got {type(options).__name__}")
        self.config = config
        self.options = options
        ex = Execution(options)
        # registration order = state-dict order of the official checkpoints
        self.backbone = ResNetFPN(config.resnetfpn, ex)
        self.pos_encoding = PositionEncodingSine(
            config.coarse.d_model, config.coarse.temp_bug_fix, config.coarse.pos_encoding
        )
        self.loftr_coarse = LocalFeatureTransformer(config.coarse, ex)
        self.coarse_matching = CoarseMatching(config.match_coarse, ex)
        self.fine_preprocess = FinePreprocess(
            config.coarse.d_model,
            config.fine.d_model,
            config.fine_window_size,
            config.fine_concat_coarse_feat,
            stride=config.resolution[0] // config.resolution[1],
        )
        self.loftr_fine = LocalFeatureTransformer(config.fine, ex)
        self.execution = ex
        self.compiled = False  # set by compile_stages (cannot be undone on an instance)
        if options.compile:
            self.compile_stages()

    def set_options(self, options: ExecutionOptions) -> LoFTR:
        """Run with other execution options from now on (same weights); returns ``self``.

        With ``options.compile`` the dense stages are compiled (:meth:`compile_stages`);
        compilation cannot be undone on this instance.
        """
        if not isinstance(options, ExecutionOptions):
            raise ConfigError(f"options must be an ExecutionOptions, got {type(options).__name__}")
        self.options = options
        self.execution = Execution(options)
        self._use(self, self.execution)
        if options.compile and not self.compiled:
            self.compile_stages()
        elif self.compiled:  # the fine graph stays dynamic: plain products inside it
            self._use(self.loftr_fine, Execution(options, dynamic_shapes=True))
        return self

    @staticmethod
    def _use(root: nn.Module, execution: Execution) -> None:
        for mod in root.modules():
            if "execution" in vars(mod):
                vars(mod)["execution"] = execution  # a plain attribute, not a submodule

    def compile_stages(self, **compile_kwargs: Any) -> LoFTR:
        """``torch.compile`` the dense stages in place; the data-dependent part stays eager.

        The backbone and the coarse transformer (shapes fixed by the image size) are compiled as
        they are; the fine transformer, whose batch is the number of coarse matches, is compiled
        with ``dynamic=True`` so that a new match count does not trigger a recompilation. Coarse
        match extraction (``nonzero``) and the window gathering run eagerly between the graphs.
        ``state_dict()`` keys are unchanged.

        Args:
            compile_kwargs: passed to :meth:`torch.nn.Module.compile` (e.g. ``mode=...``).

        Returns:
            ``self``.
        """
        self.backbone.compile(**compile_kwargs)
        self.loftr_coarse.compile(**compile_kwargs)
        self._use(self.loftr_fine, Execution(self.options, dynamic_shapes=True))
        self.loftr_fine.compile(**{"dynamic": True, **compile_kwargs})
        self.compiled = True
        return self

    # ------------------------------------------------------------------------------ the pipeline
    def _tokens(self, coarse: Tensor) -> Tensor:
        """Positional encoding, flattened: ``(N, C, H, W)`` -> ``(N, H*W, C)``."""
        return self.pos_encoding(coarse).flatten(2).transpose(1, 2).contiguous()

    def encode(self, image: Tensor) -> EncodedImage:
        """Steps 1-2 for one batch of images, which depend on no other image: CNN and
        positional encoding. Cache the result to match an image against many others
        (:meth:`forward_encoded`).

        Args:
            image: ``(N, 1, H, W)`` floats in [0, 1] (H, W multiples of 8).
        """
        image = _image({"image": image}, "image")
        coarse, fine = self.backbone(image)
        return EncodedImage(self._tokens(coarse), fine)

    def encoded_nbytes(self, height: int, width: int, element_size: int = 4) -> int:
        """Bytes :meth:`encode` returns for one ``height x width`` image (multiples of 8):
        coarse tokens at 1/8 and the fine map at 1/2, ``element_size`` bytes per value."""
        cfg = self.config
        coarse = (height // 8) * (width // 8) * cfg.coarse.d_model
        fine = (height // 2) * (width // 2) * cfg.resnetfpn.block_dims[0]
        return (coarse + fine) * element_size

    def _coarse(
        self, inputs: _Inputs, encoded: tuple[EncodedImage, EncodedImage] | None = None
    ) -> _Coarse:
        """Steps 1-3: CNN, positional encoding (or their cached results), coarse transformer."""
        ex = self.execution
        if encoded is None:
            c0, f0, c1, f1 = ex.backbone_pair(self.backbone, inputs.image0, inputs.image1)
            tokens0, tokens1 = self._tokens(c0), self._tokens(c1)  # (N, L, C), (N, S, C)
        else:
            (tokens0, f0), (tokens1, f1) = ((e.tokens, e.fine) for e in encoded)
        tokens0, tokens1 = ex.transformer(
            "coarse", self.loftr_coarse, tokens0, tokens1, inputs.mask0, inputs.mask1
        )
        return _Coarse(tokens0, tokens1, f0, f1)

    def _keep(self, inputs: _Inputs, device: torch.device) -> tuple[Tensor, Tensor]:
        n = inputs.image0.shape[0]
        return self.coarse_matching.keep_masks(
            n, inputs.hw0_c, inputs.hw1_c, inputs.grid0, inputs.grid1, device
        )

    def _fine(self, coarse: _Coarse, matches: CoarseMatches) -> Tensor:
        """Steps 5-7: windows, fine transformer, expectation -> ``expec_f`` ``(M, 3)``.

        A caller's autocast is disabled here: the stage runs in the parameters' dtype (float32 for
        an fp32 model under autocast), since the sub-pixel expectation is what low precision hurts
        most; only the execution option ``fine_dtype`` lowers the fine transformer's precision.
        """
        device_type = coarse.fine0.device.type
        dtype = next(self.loftr_fine.parameters()).dtype
        with torch.autocast(device_type, enabled=False):
            maps = (
                coarse.fine0.to(dtype),
                coarse.fine1.to(dtype),
                coarse.feat0.to(dtype),
                coarse.feat1.to(dtype),
            )
            # Matches are independent here: chunks bound the memory of the window tensors
            # (M x W*W tokens through the fine transformer) whatever the number of matches.
            parts = []
            m = matches.b_ids.shape[0]
            step = self.execution.fine_chunk_matches(coarse.fine0.device)
            for start in range(0, max(m, 1), step):
                chunk = slice(start, start + step)
                win0, win1 = self.fine_preprocess(
                    *maps, matches.b_ids[chunk], matches.i_ids[chunk], matches.j_ids[chunk]
                )
                if win0.shape[0] > 0:
                    win0, win1 = self.execution.transformer("fine", self.loftr_fine, win0, win1)
                parts.append(fine_expectation(win0, win1))
                del win0, win1
            return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _keypoints(
        self, inputs: _Inputs, matches: CoarseMatches, expec_f: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Coarse keypoints of both images and refined image-1 keypoints (pixels)."""
        stride_c, stride_f = (float(s) for s in self.config.resolution)
        b = matches.b_ids
        kpts0 = _cell_xy(matches.i_ids, inputs.hw0_c[1], stride_c, inputs.scale0, b)
        kpts1 = _cell_xy(matches.j_ids, inputs.hw1_c[1], stride_c, inputs.scale1, b)
        scale_f: Tensor | float = stride_f
        if inputs.scale1 is not None:
            scale_f = stride_f * inputs.scale1[b].to(torch.float32)
        kpts1_f = refine_keypoints(kpts1, expec_f, self.config.fine_window_size, scale_f)
        return kpts0, kpts1, kpts1_f

    def forward(self, data: Mapping[str, Tensor], *, thr: float | None = None) -> dict[str, Tensor]:
        """Match two batches of images (inference).

        Args:
            data: ``image0`` ``(N, 1, H0, W0)``, ``image1`` ``(N, 1, H1, W1)`` floats in [0, 1]
                (H, W multiples of 8); optional ``mask0`` ``(N, H0/8, W0/8)`` / ``mask1`` bool
                (True = valid) and ``scale0``/``scale1`` ``(N, 2)`` (keypoints are then in
                original-image pixels). Never modified.
            thr: coarse confidence threshold for this call (default ``config.match_coarse.thr``;
                any value in [0, 1): no weight depends on it).

        Returns:
            A new dict: ``keypoints0``, ``keypoints1`` ``(M, 2)`` float32 pixels (x, y),
            ``confidence`` ``(M,)``, ``batch_indexes`` ``(M,)`` int64, plus ``keypoints0_c``,
            ``keypoints1_c`` (coarse) and ``fine_std`` ``(M,)``. Ordered by batch, then cell of
            image 0.
        """
        return self._infer(_validate(data), None, thr)

    def forward_encoded(
        self,
        data: Mapping[str, Tensor],
        encoded0: EncodedImage,
        encoded1: EncodedImage,
        *,
        thr: float | None = None,
    ) -> dict[str, Tensor]:
        """:meth:`forward` with steps 1-2 already done (:meth:`encode` of ``data``'s images).

        ``data`` still gives the image sizes, masks and scales (``image0``/``image1`` are only
        checked, not recomputed). Returns what :meth:`forward` returns.
        """
        inputs = _validate(data)
        for name, enc, hw in (
            ("encoded0", encoded0, inputs.hw0_c),
            ("encoded1", encoded1, inputs.hw1_c),
        ):
            n = inputs.image0.shape[0]
            if tuple(enc.tokens.shape[:2]) != (n, hw[0] * hw[1]):
                raise InputError(
                    f"{name} holds tokens {tuple(enc.tokens.shape)} but the image is {n} x "
                    f"{hw[0] * 8}x{hw[1] * 8} px; encode the same image (LoFTR.encode)"
                )
        return self._infer(inputs, (encoded0, encoded1), thr)

    def _infer(
        self,
        inputs: _Inputs,
        encoded: tuple[EncodedImage, EncodedImage] | None,
        thr: float | None,
    ) -> dict[str, Tensor]:
        coarse = self._coarse(inputs, encoded)
        keep0, keep1 = self._keep(inputs, coarse.feat0.device)
        matches = self.coarse_matching(
            coarse.feat0, coarse.feat1, keep0, keep1, inputs.mask0, inputs.mask1, thr=thr
        )
        expec_f = self._fine(coarse, matches)
        kpts0, kpts1_c, kpts1 = self._keypoints(inputs, matches, expec_f)
        m = matches.b_ids.shape[0]
        return {
            "keypoints0": kpts0,
            "keypoints1": kpts1,
            "confidence": matches.mconf,
            "batch_indexes": matches.b_ids,
            "keypoints0_c": kpts0,
            "keypoints1_c": kpts1_c,
            "fine_std": expec_f[:, 2] if expec_f.shape[0] else expec_f.new_zeros(m),
        }

    def forward_train(
        self,
        data: Mapping[str, Tensor],
        spv_b_ids: Tensor,
        spv_i_ids: Tensor,
        spv_j_ids: Tensor,
    ) -> dict[str, Any]:
        """The training path: what the losses need, with coarse predictions padded with GT.

        Args:
            data: as :meth:`forward`.
            spv_b_ids, spv_i_ids, spv_j_ids: ``(G,)`` int64 ground-truth coarse matches.

        Returns:
            A new dict with ``conf_matrix`` ``(N, L, S)`` (differentiable), for optimal transport
            ``conf_matrix_with_bin`` ``(N, L+1, S+1)``; the fine-level selection ``b_ids``,
            ``i_ids``, ``j_ids``, ``gt_mask`` ``(M',)`` (predictions first, GT pads after) and
            ``expec_f`` ``(M', 3)`` (differentiable); for the predictions only ``m_bids``,
            ``mconf``, ``mkpts0_c``, ``mkpts1_c``, ``mkpts0_f``, ``mkpts1_f``; the sizes
            ``hw0_i``, ``hw1_i``, ``hw0_c``, ``hw1_c``, ``hw0_f``, ``hw1_f`` and ``W``.
        """
        inputs = _validate(data)
        for name, ids in (
            ("spv_b_ids", spv_b_ids),
            ("spv_i_ids", spv_i_ids),
            ("spv_j_ids", spv_j_ids),
        ):
            if not isinstance(ids, Tensor) or ids.dtype != torch.long or ids.dim() != 1:
                raise InputError(f"{name} must be a 1-D int64 tensor, got {ids!r:.80}")
        if not spv_b_ids.shape == spv_i_ids.shape == spv_j_ids.shape:
            raise InputError(
                "spv_b_ids, spv_i_ids, spv_j_ids must have equal lengths, got "
                f"{spv_b_ids.shape[0]}, {spv_i_ids.shape[0]}, {spv_j_ids.shape[0]}"
            )
        cfg = self.config.match_coarse
        coarse = self._coarse(inputs)
        keep0, keep1 = self._keep(inputs, coarse.feat0.device)
        conf, conf_with_bin = self.coarse_matching.confidence(
            coarse.feat0, coarse.feat1, inputs.mask0, inputs.mask1
        )
        pred = select_matches(conf.detach(), cfg.thr, keep0, keep1)
        n, length, s = conf.shape
        n_max = max_candidates(n, length, s, inputs.grid0, inputs.grid1)
        matches, gt_mask = pad_with_ground_truth(
            pred,
            spv_b_ids,
            spv_i_ids,
            spv_j_ids,
            n_max,
            cfg.train_coarse_percent,
            cfg.train_pad_num_gt_min,
        )
        expec_f = self._fine(coarse, matches)
        n_pred = int((~gt_mask).sum())
        preds = CoarseMatches(*(t[:n_pred] for t in matches))
        with torch.no_grad():
            kpts0, kpts1_c, kpts1 = self._keypoints(inputs, preds, expec_f.detach())
        out: dict[str, Any] = {
            "conf_matrix": conf,
            "b_ids": matches.b_ids,
            "i_ids": matches.i_ids,
            "j_ids": matches.j_ids,
            "gt_mask": gt_mask,
            "m_bids": preds.b_ids,
            "mconf": preds.mconf,
            "mkpts0_c": kpts0,
            "mkpts1_c": kpts1_c,
            "expec_f": expec_f,
            "mkpts0_f": kpts0,
            "mkpts1_f": kpts1,
            "hw0_i": tuple(inputs.image0.shape[2:]),
            "hw1_i": tuple(inputs.image1.shape[2:]),
            "hw0_c": inputs.hw0_c,
            "hw1_c": inputs.hw1_c,
            "hw0_f": tuple(coarse.fine0.shape[2:]),
            "hw1_f": tuple(coarse.fine1.shape[2:]),
            "W": self.config.fine_window_size,
        }
        if conf_with_bin is not None:
            out["conf_matrix_with_bin"] = conf_with_bin
        return out
