"""Point-cloud -> image projection encoder of UniRepLKNet's point modality (card: unireplknet)."""

from __future__ import annotations

import math

import pytest
import torch

from convatlas.layers.point_projection import (
    VIEW_ANGLES,
    EdgeConvFeatures,
    MultiViewFusion,
    PointProjectionEncoder,
    euler_to_matrix,
    knn_indices,
)


def test_euler_matrices_are_rotations_and_match_axis_rotations() -> None:
    r = euler_to_matrix(torch.tensor(VIEW_ANGLES, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(len(VIEW_ANGLES), 3, 3)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(len(VIEW_ANGLES), dtype=torch.float64))
    rz = euler_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))[0]
    torch.testing.assert_close(rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64))


def test_knn_matches_brute_force() -> None:
    pts = torch.randn(2, 20, 3)
    idx = knn_indices(pts, 4)
    d = ((pts[:, :, None] - pts[:, None]) ** 2).sum(-1)
    ref = d.argsort(-1)[..., :4]
    assert torch.equal(idx.sort(-1).values, ref.sort(-1).values)
    assert (idx == torch.arange(20)[None, :, None]).any(-1).all()  # each point is its own neighbour


def test_edgeconv_is_permutation_equivariant() -> None:
    torch.manual_seed(0)
    m = EdgeConvFeatures(4, 8, k=5).eval()
    pts = torch.randn(2, 16, 3)
    perm = torch.randperm(16)
    with torch.no_grad():
        torch.testing.assert_close(m(pts[:, perm]), m(pts)[:, perm])


def test_rasterisation_sums_point_features_into_3x3_footprints() -> None:
    """Two points far apart: their (centred) footprints hold exactly their features, elsewhere zero."""
    enc = PointProjectionEncoder(num_views=1, img_size=16, fusion=False, k=2).eval()
    pts = torch.tensor([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    idx = enc.pixel_indices(pts)
    assert idx.shape == (1, 18) and len(set(idx.tolist()[0])) == 18  # 2 x 9 distinct pixels
    rows, cols = idx[0] // 16, idx[0] % 16
    assert int(rows.min()) >= 0 and int(rows.max()) <= 15 and int(cols.max()) <= 15
    # the pair is centred: footprint centres are symmetric about the grid centre
    centre = (rows.float().mean().item(), cols.float().mean().item())
    assert abs(centre[0] - 7) <= 1 and abs(centre[1] - 7) <= 1


def test_encoder_shapes_fusion_and_errors() -> None:
    torch.manual_seed(0)
    enc = PointProjectionEncoder(num_views=3, img_size=21, obj_size=15, graph_dim=8, k=4)
    img = enc(torch.randn(2, 30, 3))
    assert img.shape == (6, 3, 21, 21)
    lo = ((0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).view(1, 3, 1, 1)
    assert (img >= lo - 1e-6).all()  # sigmoid then ImageNet normalisation
    img.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    fus = MultiViewFusion(8, 2, patch=7)
    assert fus(torch.randn(4, 8, 14, 14)).shape == (4, 8, 14, 14)
    with pytest.raises(ValueError, match="num_views"):
        PointProjectionEncoder(num_views=0)
    with pytest.raises(ValueError, match="obj_size"):
        PointProjectionEncoder(img_size=32, obj_size=40)
