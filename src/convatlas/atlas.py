"""The 76 papers of the atlas as data; each paper's status is computed from what is registered, never typed in.

Every paper has a slug (the name of its card, ``convatlas verify <slug>`` and ``register_model(paper=<slug>)``),
its title, arXiv id, area and group (the capability/issue that covers it). Its status is derived:

- ``planned``: nothing registered for the slug (no model with ``paper=slug``, no component, no identity);
- ``implemented``: something is registered, but not every check passes (or checks were not run);
- ``verified``: at least one check ran and every check passed: params/MACs of every non-test variant against
  its :class:`~convatlas.registry.Reported` figures and every identity (see :mod:`convatlas.verify`).

Example::

    from convatlas.atlas import get_paper, paper_status
    get_paper("convnext").arxiv        # '2201.03545'
    paper_status("convnext")            # 'verified' once its variants and identities pass
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = [
    "Paper",
    "PAPERS",
    "AREAS",
    "GROUPS",
    "STATUSES",
    "get_paper",
    "list_papers",
    "registered_models",
    "components",
    "is_registered",
    "paper_status",
    "atlas_rows",
    "UnknownPaperError",
]

STATUSES = ("planned", "implemented", "verified")


@dataclass(frozen=True)
class Paper:
    """One atlas row. ``code`` is the official repository (``owner/name``; empty when none is known).

    ``arxiv_confirmed=False`` marks ids the card could not confirm against the official repository.
    """

    number: int
    slug: str
    title: str
    short_name: str
    arxiv: str
    year: int
    area: str
    group: str
    code: str = ""
    arxiv_confirmed: bool = True

    @property
    def url(self) -> str:
        """arXiv abstract page."""
        return f"https://arxiv.org/abs/{self.arxiv}"


PAPERS: tuple[Paper, ...] = (
    Paper(1, 'convnext', 'A ConvNet for the 2020s', 'ConvNeXt', '2201.03545', 2022, 'classification', 'Foundation', 'facebookresearch/ConvNeXt'),
    Paper(2, 'inceptionnext', 'InceptionNeXt: When Inception Meets ConvNeXt', 'InceptionNeXt', '2303.16900', 2023, 'classification', 'ConvNet backbones', 'sail-sg/inceptionnext'),
    Paper(3, 'metaformer', 'MetaFormer Baselines for Vision', 'MetaFormer (IdentityFormer, RandFormer, PoolFormerV2, ConvFormer, CAFormer, StarReLU)', '2210.13452', 2022, 'classification', 'ConvNet backbones', 'sail-sg/metaformer'),
    Paper(4, 'hornet', 'HorNet: Recursive Gated Convolutions', 'HorNet (gnConv)', '2207.14284', 2022, 'classification', 'ConvNet backbones', 'raoyongming/HorNet'),
    Paper(5, 'unireplknet', 'UniRepLKNet: Universal Perception Large-Kernel ConvNet', 'UniRepLKNet', '2311.15599', 2023, 'classification', 'ConvNet backbones', 'AILab-CVC/UniRepLKNet'),
    Paper(6, 'scaling-up-kernels', 'Scaling Up Your Kernels: Large Kernel Design in ConvNets', 'UniRepLKNet (journal extension)', '2410.08049', 2024, 'classification', 'ConvNet backbones', 'AILab-CVC/UniRepLKNet'),
    Paper(7, 'lsnet', 'LSNet: See Large, Focus Small', 'LSNet (LS convolution)', '2503.23135', 2025, 'classification', 'ConvNet backbones', 'THU-MIG/lsnet'),
    Paper(8, 'deepmad', 'DeepMAD: Mathematical Architecture Design for Deep CNN', 'DeepMAD', '2303.02165', 2023, 'classification', 'ConvNet backbones', 'alibaba/lightweight-neural-architecture-search'),
    Paper(9, 'tvconv', 'TVConv: Efficient Translation Variant Convolution', 'TVConv', '2203.10489', 2022, 'layers', 'ConvNet backbones', 'JierunChen/TVConv'),
    Paper(10, 'fdconv', 'Frequency Dynamic Convolution for Dense Image Prediction', 'FDConv', '2503.18783', 2025, 'layers', 'ConvNet backbones', 'Linwei-Chen/FDConv'),
    Paper(11, 'aff', 'Adaptive Frequency Filters As Efficient Global Token Mixers', 'AFF / AFFNet', '2307.14008', 2023, 'classification', 'ConvNet backbones', 'microsoft/TokenMixers'),
    Paper(12, 'wavemix', 'WaveMix: Resource-efficient Neural Network for Image Analysis', 'WaveMix (and WaveMix-Lite)', '2205.14375', 2022, 'classification', 'ConvNet backbones', 'pranavphoenix/WaveMix'),
    Paper(13, 'raftmlp', 'RaftMLP: Without Attention and with Less Spatial Locality', 'RaftMLP', '2108.04384', 2021, 'classification', 'ConvNet backbones', 'okojoalg/raft-mlp'),
    Paper(14, 'phnn', 'PHNNs: Parameterized Hypercomplex Convolutions', 'PHNN / PHC', '2110.04176', 2021, 'layers', 'ConvNet backbones', 'eleGAN23/HyperNets'),
    Paper(15, 'flashfftconv', 'FlashFFTConv: Efficient Convolutions for Long Sequences', 'FlashFFTConv', '2311.05908', 2023, 'ops', 'Long convolutions', 'HazyResearch/flash-fft-conv'),
    Paper(16, 'sgconv', 'What Makes Convolutional Models Great on Long Sequence Modeling?', 'SGConv', '2210.09298', 2022, 'sequence', 'Long convolutions', 'ctlllll/SGConv'),
    Paper(17, 'lococo', 'LoCoCo: Dropping In Convolutions for Long Context Compression', 'LoCoCo', '2406.05317', 2024, 'sequence', 'Long convolutions', 'VITA-Group/LoCoCo'),
    Paper(18, 'hyperzzw', 'HyperZ·Z·W Operator Connects Slow-Fast Networks', 'HyperZ·Z·W / Terminator', '2401.17948', 2024, 'sequence', 'Long convolutions', 'hyperevolnet/Terminator'),
    Paper(19, 'colontcn', 'ColonTCN: Colonoscopy Video Temporal Segmentation', 'ColonTCN', '2502.03430', 2025, 'sequence', 'Long convolutions', 'cosmoimd/temporal_segmentation'),
    Paper(20, 'swin-unetr', 'Swin UNETR: Brain Tumor Segmentation', 'Swin UNETR', '2201.01266', 2022, 'segmentation', 'Medical and dense', 'Project-MONAI/research-contributions'),
    Paper(21, 'stu-net', 'STU-Net: Scalable and Transferable Medical Segmentation', 'STU-Net', '2304.06716', 2023, 'segmentation', 'Medical and dense', 'uni-medical/STU-Net'),
    Paper(22, 'interactive-seg', 'Interactive segmentation of medical images through FCNs', 'Interactive-FCN (the basis of MONAI "DeepGrow")', '1903.08205', 2019, 'segmentation', 'Medical and dense', ''),
    Paper(23, 'lymph-nodes', 'Mediastinal lymph nodes segmentation with 3D CNN ensembles', 'AGUNet-APG / LN ensembles', '2102.06515', 2022, 'segmentation', 'Medical and dense', 'dbouget/ct_mediastinal_structures_segmentation', arxiv_confirmed=False),
    Paper(24, 'lsms', 'LSMS: Language-guided Scale-aware MedSegmentor', 'LSMS', '2408.17347', 2024, 'segmentation', 'Medical and dense', ''),
    Paper(25, 'cross-d-conv', 'Cross-D Conv: Fourier Shifting between 2D and 3D', 'Cross-D Conv', '2411.02441', 2024, 'layers', 'Medical and dense', 'convergingmachine/Cross-D-Conv'),
    Paper(26, 'sepc', 'Scale-Equalizing Pyramid Convolution for Object Detection', 'SEPC', '2005.03101', 2020, 'detection', 'Medical and dense', 'jshilong/SEPC'),
    Paper(27, 'good-student', 'CNN-Transformer Collaborative Learning for Segmentation', 'CNN-ViT collaborative KD (HFD + BSD)', '2307.12574', 2023, 'segmentation', 'Medical and dense', ''),
    Paper(28, 'mirnet', 'MIRNet: Enriched Features for Image Restoration', 'MIRNet', '2003.06792', 2020, 'restoration', 'Restoration and SR', 'swz30/MIRNet'),
    Paper(29, 'maxim', 'MAXIM: Multi-Axis MLP for Image Processing', 'MAXIM', '2201.02973', 2022, 'restoration', 'Restoration and SR', 'google-research/maxim'),
    Paper(30, 'drsformer', 'DRSformer: Sparse Transformer for Image Deraining', 'DRSformer', '2303.11950', 2023, 'restoration', 'Restoration and SR', 'cschenxiang/DRSformer', arxiv_confirmed=False),
    Paper(31, 'espcn', 'ESPCN: Efficient Sub-Pixel Convolution Super-Resolution', 'ESPCN', '1609.05158', 2016, 'restoration', 'Restoration and SR', ''),
    Paper(32, 'cfsr', 'CFSR: ConvFormer-based Efficient Super-Resolution', 'CFSR', '2401.05633', 2024, 'restoration', 'Restoration and SR', 'Aitical/CFSR'),
    Paper(33, 'tunable-conv', 'Tunable Convolutions with Parametric Multi-Loss Optimization', 'TunableConv', '2304.00898', 2023, 'layers', 'Restoration and SR', 'mindspore-lab/mindediting'),
    Paper(34, 'weighted-conv', 'Optimal Weighted Convolution for Classification and Denoising', 'wConv (weighted convolution)', '2505.24558', 2025, 'layers', 'Restoration and SR', 'cammarasana123/weightedConvolution2.0'),
    Paper(35, 'resupnet', 'Adversarial Perturbations Prevail in the Y-Channel (ResUpNet)', 'ResUpNet', '2003.00883', 2020, 'restoration', 'Restoration and SR', 'elcronos/ycbcr-adversarial'),
    Paper(36, 'cvt', 'CvT: Introducing Convolutions to Vision Transformers', 'CvT', '2103.15808', 2021, 'classification', 'ViT hybrids', 'microsoft/CvT'),
    Paper(37, 'convit', 'ConViT: Soft Convolutional Inductive Biases', 'ConViT (GPSA)', '2103.10697', 2021, 'classification', 'ViT hybrids', 'facebookresearch/convit'),
    Paper(38, 'crossvit', 'CrossViT: Cross-Attention Multi-Scale Vision Transformer', 'CrossViT', '2103.14899', 2021, 'classification', 'ViT hybrids', 'IBM/CrossViT'),
    Paper(39, 'tic', 'TiC: Vision Transformer in Convolution (MSA-Conv)', 'TiC (MSA-Conv)', '2310.04134', 2023, 'classification', 'ViT hybrids', 'zs670980918/MSA-Conv'),
    Paper(40, 'ninformer', 'NiNformer: Network in Network Transformer', 'NiNformer', '2403.02411', 2024, 'classification', 'ViT hybrids', 'Abdullah-88/NiNformer'),
    Paper(41, 'glmix', 'Revisiting the Integration of Convolution and Attention (GLMix)', 'GLMix (models: GLNet)', '2411.14429', 2024, 'classification', 'ViT hybrids', 'rayleizhu/GLMix'),
    Paper(42, 'svt', 'Scattering Vision Transformer: Spectral Mixing Matters', 'SVT', '2311.01310', 2023, 'classification', 'ViT hybrids', 'badripatro/svt'),
    Paper(43, 'sret', 'Sliced Recursive Transformer', 'SReT', '2111.05297', 2021, 'classification', 'ViT hybrids', 'szq0214/SReT'),
    Paper(44, 'convsharevit', 'ConvShareViT: Convolutional Attention for Optical Accelerators', 'ConvShareViT', '2504.11517', 2025, 'classification', 'ViT hybrids', ''),
    Paper(45, 'patch-scaling', 'Scaling Laws in Patchification', 'Patch Scaling (Adventurer patch-1)', '2502.03738', 2025, 'classification', 'ViT hybrids', 'wangf3014/Patch_Scaling'),
    Paper(46, 'expedite-vit', 'Expediting Large-Scale ViT for Dense Prediction', 'Expedit (Hourglass ViT: token clustering + token reconstruction layers)', '2210.01035', 2022, 'dense', 'ViT hybrids', 'Expedit-LargeScale-Vision-Transformer'),
    Paper(47, 'polymax', 'PolyMaX: General Dense Prediction with Mask Transformer', 'PolyMaX', '2311.05770', 2023, 'dense', 'ViT hybrids', 'google-research/deeplab2'),
    Paper(48, 'mossformer', 'MossFormer: Monaural Speech Separation', 'MossFormer', '2302.11824', 2023, 'audio', 'Audio', 'alibabasglab/MossFormer'),
    Paper(49, 'd3net-aec', 'Complex-Valued Multidilated CNN for Echo and Noise Suppression', 'complex D3Net AEC', '2110.00745', 2021, 'audio', 'Audio', ''),
    Paper(50, 'svs-ibm', 'Singing Voice Separation with Ideal Binary Mask CNN', 'SVS-IBM CNN', '1812.01278', 2018, 'audio', 'Audio', 'EdwardLin2014/CNN-with-IBM-for-Singing-Voice-Separation'),
    Paper(51, 'evolvegcn', 'EvolveGCN: Evolving GCNs for Dynamic Graphs', 'EvolveGCN', '1902.10191', 2019, 'graph', 'Science, graphs, video', 'IBM/EvolveGCN'),
    Paper(52, 'eels-3dcvae', 'EELS anomaly detection with 3D convolutional VAEs', '3D-CVAE (EELS)', '2412.16200', 2024, 'science', 'Science, graphs, video', 'seyfal/3DCVAE'),
    Paper(53, 'wafer-osr', 'Deep Open-Set Recognition for Silicon Wafer Monitoring', 'Wafer OSR (SSCN + GMM)', '2208.14071', 2022, 'science', 'Science, graphs, video', ''),
    Paper(54, 'deep-cd', 'A Deep Conjugate Direction Method for Linear Systems', 'DCDM', '2205.10763', 2022, 'science', 'Science, graphs, video', 'ayano721/2023_DCDM'),
    Paper(55, 'apriori-compression', 'A priori compression of CNNs for wave simulators', 'a-priori CNN compression', '2304.04964', 2023, 'science', 'Science, graphs, video', ''),
    Paper(56, 'most-dsa', 'MoSt-DSA: Multi-Frame Interpolation in DSA Images', 'MoSt-DSA', '2407.07078', 2024, 'video', 'Science, graphs, video', 'ZyoungXu/MoSt-DSA'),
    Paper(57, 'spark', 'SparK: Sparse and Hierarchical Masked Modeling for ConvNets', 'SparK', '2301.03580', 2023, 'methods', 'Methods and compression', 'keyu-tian/SparK'),
    Paper(58, 'seit-pp', 'SeiT++: Masked Token Modeling for Storage-efficient Training', 'SeiT++', '2312.10105', 2024, 'methods', 'Methods and compression', 'naver-ai/seit'),
    Paper(59, 'guidance', 'Training the Untrainable: Representational Alignment', 'Guidance', '2410.20035', 2024, 'methods', 'Methods and compression', 'vsubramaniam851/untrainable-networks'),
    Paper(60, 'deps', 'DεpS: Delayed ε-Shrinking for Once-For-All Training', 'DεpS (DEpS)', '2407.06167', 2024, 'methods', 'Methods and compression', 'gatech-sysml/deps'),
    Paper(61, 'self-expanding', 'Self Expanding Convolutional Neural Networks', 'SECNN', '2401.05686', 2024, 'methods', 'Methods and compression', ''),
    Paper(62, 'entropic-student', 'Supervised Compression for Edge Computing (Entropic Student)', 'Entropic Student', '2108.11898', 2022, 'methods', 'Methods and compression', 'yoshitomo-matsubara/supervised-compression'),
    Paper(63, 'quantune', 'Quantune: Post-training Quantization with XGBoost', 'Quantune', '2202.05048', 2022, 'compress', 'Methods and compression', ''),
    Paper(64, 'bivit', 'BiViT: Extremely Compressed Binary Vision Transformer', 'BiViT', '2211.07091', 2022, 'compress', 'Methods and compression', 'ThisisBillhe/BiViT'),
    Paper(65, 'fast-scaling', 'Fast and Accurate Model Scaling', 'dWr scaling (fast compound scaling)', '2103.06877', 2021, 'analysis', 'Analysis and kernels', 'facebookresearch/pycls'),
    Paper(66, 'conv-efficiency', 'On the Efficiency of Convolutional Neural Networks', 'ConvFirst (block fusion, efficiency-gap and waterline analysis)', '2404.03617', 2024, 'analysis', 'Analysis and kernels', 'andravin/spio'),
    Paper(67, 'cnn-filter-db', 'CNN Filter DB: Trained Convolutional Filters', 'CNN Filter DB', '2203.15331', 2022, 'analysis', 'Analysis and kernels', 'paulgavrikov/CNN-Filter-DB'),
    Paper(68, 'wide-cnn', 'What Can Be Learnt With Wide Convolutional Neural Networks?', 'Hierarchical CNN kernels (deep CNN NTK learning curves)', '2208.01003', 2023, 'analysis', 'Analysis and kernels', ''),
    Paper(69, 'data-scaling', 'Revisiting Unreasonable Effectiveness of Data', 'JFT-300M data scaling', '1707.02968', 2017, 'analysis', 'Analysis and kernels', ''),
    Paper(70, 's2rda', 'Utility of Synthetic Data with Blender (S2RDA)', 'S2RDA (SynSL)', '2303.09165', 2023, 'data', 'Analysis and kernels', 'huitangtang/On_the_Utility_of_Synthetic_Data'),
    Paper(71, 'im2win', 'Im2win: An Efficient Convolution Paradigm', 'Im2win', '2306.14316', 2023, 'ops', 'Analysis and kernels', 'seth-lu/Im2win'),
    Paper(72, 'deformable-codesign', 'Algorithm-hardware Co-design for Deformable Convolution', 'DeformCoDesign (precursor of CoDeNet)', '2002.08357', 2020, 'ops', 'Analysis and kernels', 'DequanWang/CoDeNet'),
    Paper(73, 'dico', 'DiCo: ConvNets for Scalable Diffusion Modeling', 'DiCo', '2505.11196', 2025, 'generative', 'Generative and multimodal', 'shallowdream204/DiCo'),
    Paper(74, 'fitv2', 'FiTv2: Flexible Vision Transformer for Diffusion', 'FiTv2', '2410.13925', 2024, 'generative', 'Generative and multimodal', 'whlzy/FiT'),
    Paper(75, 'styleswin', 'StyleSwin: Transformer-based GAN', 'StyleSwin', '2112.10762', 2021, 'generative', 'Generative and multimodal', 'microsoft/StyleSwin'),
    Paper(76, 'convllava', 'ConvLLaVA: Hierarchical Backbones as Visual Encoder', 'ConvLLaVA', '2405.15738', 2024, 'multimodal', 'Generative and multimodal', 'alibaba/conv-llava'),
)

_BY_SLUG: dict[str, Paper] = {p.slug: p for p in PAPERS}
AREAS: tuple[str, ...] = tuple(dict.fromkeys(p.area for p in PAPERS))
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in PAPERS))


class UnknownPaperError(ValueError):
    """A slug that is not in the atlas; the message suggests close matches."""


def get_paper(slug: str) -> Paper:
    """The :class:`Paper` of ``slug``; raises :class:`UnknownPaperError` with suggestions."""
    try:
        return _BY_SLUG[slug]
    except KeyError:
        close = difflib.get_close_matches(slug, list(_BY_SLUG), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `convatlas papers`"
        raise UnknownPaperError(f"unknown paper slug {slug!r}{hint}") from None


def _match(value: str, wanted: str | None) -> bool:
    return wanted is None or value.lower() == wanted.lower()


def list_papers(*, area: str | None = None, group: str | None = None) -> list[Paper]:
    """Atlas rows in order, optionally filtered by ``area`` / ``group`` (case-insensitive exact match).

    Raises ValueError for an area or group that does not exist (with the valid choices).
    """
    if area is not None and not any(_match(a, area) for a in AREAS):
        raise ValueError(f"unknown area {area!r}; choose from: {', '.join(AREAS)}")
    if group is not None and not any(_match(g, group) for g in GROUPS):
        raise ValueError(f"unknown group {group!r}; choose from: {', '.join(GROUPS)}")
    return [p for p in PAPERS if _match(p.area, area) and _match(p.group, group)]


def registered_models(slug: str, *, include_test: bool = False) -> list[str]:
    """Names of registered models with ``paper=slug`` (test-only variants excluded by default)."""
    from convatlas.registry import list_models

    return list_models(paper=slug, include_test=include_test)


def components(slug: str) -> list[str]:
    """What implements ``slug``: registered (non-test) model names, then registered component names."""
    from convatlas.identities import components_for

    return registered_models(slug) + sorted(components_for(slug))


def is_registered(slug: str) -> bool:
    """True when anything (model, test model, component or identity) is registered for ``slug``."""
    from convatlas.identities import components_for, identities_for

    return bool(registered_models(slug, include_test=True) or components_for(slug) or identities_for(slug))


def paper_status(slug: str, *, run_checks: bool = True, result: Any = None) -> str:
    """``planned`` / ``implemented`` / ``verified`` (see module docstring).

    Args:
        slug: atlas slug.
        run_checks: run :func:`convatlas.verify.verify_paper` (cached per process) to tell ``verified`` from
            ``implemented``; with False a registered paper is reported as ``implemented``.
        result: an already computed :class:`~convatlas.verify.PaperResult` to use instead of running checks.
    """
    get_paper(slug)
    if not is_registered(slug):
        return "planned"
    if result is None:
        if not run_checks:
            return "implemented"
        from convatlas.verify import verify_paper

        result = verify_paper(slug)
    return "verified" if result.ok else "implemented"


def atlas_rows(
    slugs: Iterable[str] | None = None,
    *,
    run_checks: bool = True,
    results: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One dict per paper: number, slug, title, area, group, arxiv, status, components, and check counts.

    ``results`` maps slug -> :class:`~convatlas.verify.PaperResult` (as returned by ``verify_papers``); papers
    missing from it are verified now when ``run_checks``.
    """
    rows = []
    for p in (PAPERS if slugs is None else [get_paper(s) for s in slugs]):
        res = (results or {}).get(p.slug)
        if res is None and run_checks and is_registered(p.slug):
            from convatlas.verify import verify_paper

            res = verify_paper(p.slug)
        row: dict[str, Any] = {
            "number": p.number,
            "slug": p.slug,
            "title": p.title,
            "area": p.area,
            "group": p.group,
            "arxiv": p.arxiv,
            "status": paper_status(p.slug, run_checks=False, result=res) if res is not None
            else paper_status(p.slug, run_checks=False),
            "components": components(p.slug),
        }
        if res is not None:
            row.update(res.counts())
        rows.append(row)
    return rows
