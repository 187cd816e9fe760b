"""graphattn.data.image: pixel and patch nodes in the node order of the 2-D patterns, image
patterns by name, 2-D positions, and scikit-learn's digits split."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphattn import patterns
from graphattn.data import lra
from graphattn.data.image import (
    DIGIT_CLASSES,
    IMAGE_PATTERN_NAMES,
    ImageSplit,
    LabeledImages,
    image_pattern,
    image_to_nodes,
    load_digits_split,
    nodes_to_image,
    patches,
    patches_to_image,
    positions_2d,
)


def random_images(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------
# pixels and patches as nodes
# ----------------------------------------------------------------------------------------------


def test_image_to_nodes_is_row_major_and_inverts() -> None:
    images = random_images(2, 3, 4, 5)
    nodes = image_to_nodes(images)
    assert nodes.shape == (2, 20, 3)
    for r in range(4):
        for c in range(5):
            assert torch.equal(nodes[:, r * 5 + c], images[:, :, r, c])
    assert torch.equal(nodes_to_image(nodes, 4, 5), images)
    assert torch.equal(image_to_nodes(nodes_to_image(nodes, 4, 5)), nodes)
    assert torch.equal(nodes.reshape(2, 20, 3), images.permute(0, 2, 3, 1).reshape(2, 20, 3))  # channels-last flatten


def test_positions_2d_are_the_coordinates_of_the_nodes() -> None:
    rows, columns = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    coordinates = torch.stack([rows, columns])[None]  # [1, 2, H, W]: a 2-channel "image" of its own coordinates
    assert torch.equal(positions_2d(3, 4), image_to_nodes(coordinates)[0])
    assert positions_2d(3, 4).dtype == torch.long and positions_2d(0, 4).shape == (0, 2)


@pytest.mark.parametrize("height, width", [(4, 5), (5, 3), (1, 6)])
def test_grid2d_neighbours_of_a_pixel_node_are_its_spatial_neighbours(height: int, width: int) -> None:
    position = positions_2d(height, width)  # [N, 2]
    for radius, metric in ((1, "chebyshev"), (2, "manhattan")):
        graph = patterns.grid2d(height, width, radius, metric)
        difference = (position[:, None] - position[None]).abs()  # [N, N, 2]
        distance = difference.max(-1).values if metric == "chebyshev" else difference.sum(-1)
        assert torch.equal(graph.to_dense(), distance <= radius)
    for name, builder, expected in (
        ("axial", lambda: patterns.axial(height, width), lambda d: (d[..., 0] == 0) | (d[..., 1] == 0)),
        ("dilated2d", lambda: patterns.dilated2d(height, width, 1, 2),
         lambda d: (d.abs() <= 2).all(-1) & (d % 2 == 0).all(-1)),
    ):
        d = position[None] - position[:, None]  # key - query
        assert torch.equal(builder().to_dense(), expected(d)), name


def test_message_passing_over_grid2d_equals_a_convolution() -> None:
    """Summing every pixel's 3x3 graph neighbourhood (nodes from image_to_nodes) is a 3x3
    convolution of ones with zero padding: the graph and the image agree on who is next to whom."""
    images = random_images(2, 3, 5, 6)
    graph = image_pattern("grid2d", 5, 6, radius=1, batch_size=2)
    nodes = image_to_nodes(images).reshape(-1, 3)  # [B * H * W, C], the batched graph's node order
    key, query = graph.edge_index
    summed = torch.zeros_like(nodes).index_add_(0, query, nodes[key])
    kernel = torch.ones(3, 1, 3, 3)
    expected = F.conv2d(images, kernel, padding=1, groups=3)
    torch.testing.assert_close(nodes_to_image(summed.view(2, 30, 3), 5, 6), expected)


def test_patches_match_unfold_conv_and_invert() -> None:
    images = random_images(2, 3, 6, 8)
    out = patches(images, 2)
    assert out.shape == (2, 12, 12)
    torch.testing.assert_close(out, F.unfold(images, kernel_size=2, stride=2).transpose(1, 2), rtol=0, atol=0)
    assert torch.equal(patches_to_image(out, 2, 6, 8), images)
    conv = torch.nn.Conv2d(3, 5, kernel_size=2, stride=2)
    as_linear = out @ conv.weight.reshape(5, -1).T + conv.bias  # a Linear on patches = the strided Conv2d
    torch.testing.assert_close(as_linear, image_to_nodes(conv(images)))  # in the same row-major order
    # patch (i, j) is node i * (W / p) + j and holds the pixels of rows 2i, 2i+1 and columns 2j, 2j+1
    assert torch.equal(out[:, 1 * 4 + 3].view(2, 3, 2, 2), images[:, :, 2:4, 6:8])
    assert torch.equal(patches(images, 1), image_to_nodes(images))
    whole = patches(images[:, :, :6, :6], 6)
    assert whole.shape == (2, 1, 108)


def test_pixel_and_patch_errors() -> None:
    with pytest.raises(ValueError, match=r"Expected 'images' of shape \[B, C, H, W\], got \[4, 4\]"):
        image_to_nodes(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"use images.unsqueeze\(1\)"):
        image_to_nodes(torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match="got ndarray"):
        image_to_nodes(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"nodes of shape \[B, 12, C\] \(H \* W = 3 \* 4 pixels\), got \[1, 10, 2\]"):
        nodes_to_image(torch.zeros(1, 10, 2), 3, 4)
    with pytest.raises(ValueError, match="divisible by patch_size=4, got 6x8; crop or pad"):
        patches(torch.zeros(1, 1, 6, 8), 4)
    with pytest.raises(ValueError, match="'patch_size' to be an int >= 1, got 0"):
        patches(torch.zeros(1, 1, 6, 8), 0)
    with pytest.raises(ValueError, match=r"Expected patches of shape \[B, 6, C \* 4\]"):
        patches_to_image(torch.zeros(1, 6, 5), 2, 4, 6)


# ----------------------------------------------------------------------------------------------
# patterns by name
# ----------------------------------------------------------------------------------------------


def test_image_pattern_builds_the_pattern_library_graphs() -> None:
    assert IMAGE_PATTERN_NAMES == ("full", "grid2d", "dilated2d", "axial")
    assert image_pattern("grid2d", 5, 4, radius=2, metric="euclidean").equals(patterns.grid2d(5, 4, 2, "euclidean"))
    assert image_pattern("grid2d", 5, 4).equals(patterns.grid2d(5, 4))
    assert image_pattern("dilated2d", 6, 6, radius=1, dilation=3).equals(patterns.dilated2d(6, 6, 1, 3))
    assert image_pattern("axial(axis='row')", 3, 4).equals(patterns.axial(3, 4, "row"))
    assert image_pattern("full", 3, 4).equals(patterns.full(12))
    assert image_pattern("grid2d(causal=True)", 4, 4).equals(patterns.grid2d(4, 4, causal=True))
    union = image_pattern("union(axial(), grid2d(radius=1))", 4, 5)
    assert union.equals(patterns.union(patterns.axial(4, 5), patterns.grid2d(4, 5, 1)))
    heads = image_pattern("per_head(axial(axis='row'), axial(axis='column'))", 3, 3)
    assert heads.num_heads == 2
    assert heads.equals(patterns.per_head([patterns.axial(3, 3, "row"), patterns.axial(3, 3, "column")]))
    assert image_pattern("difference(full(), grid2d())", 3, 3).num_edges == 81 - 49


def test_image_pattern_is_cached_and_batches_images() -> None:
    assert image_pattern("grid2d", 6, 6, radius=1) is image_pattern("grid2d(radius=1)", 6, 6)
    batched = image_pattern("grid2d", 6, 6, radius=1, batch_size=4)
    assert batched is image_pattern("grid2d(radius=1)", 6, 6, batch_size=4)
    single = image_pattern("grid2d", 6, 6, radius=1)
    assert batched.num_graphs == 4 and batched.num_queries == 144 and batched.replicated_from is single
    assert batched.equals(patterns.batch([single] * 4))


def test_image_pattern_errors() -> None:
    with pytest.raises(ValueError, match="Unknown image pattern 'local' in 'local'; expected one of full, grid2d"):
        image_pattern("local", 4, 4)
    with pytest.raises(ValueError, match="either in the string or as keywords, not both"):
        image_pattern("grid2d(radius=1)", 4, 4, metric="manhattan")
    with pytest.raises(ValueError, match="Could not parse image pattern 'grid2d\\('"):
        image_pattern("grid2d(", 4, 4)
    with pytest.raises(ValueError, match="must be a literal"):
        image_pattern("grid2d(radius=r)", 4, 4)
    with pytest.raises(ValueError, match="takes patterns as positional parts"):
        image_pattern("union()", 4, 4)
    with pytest.raises(ValueError, match="takes keyword arguments only"):
        image_pattern("grid2d(axial())", 4, 4)
    with pytest.raises(TypeError, match="Could not build image pattern 'grid2d'.*help\\(graphattn.patterns.grid2d\\)"):
        image_pattern("grid2d", 4, 4, window=3)
    with pytest.raises(TypeError, match="Expected the image pattern as a str"):
        image_pattern(patterns.grid2d(2, 2), 2, 2)
    with pytest.raises(ValueError, match="'batch_size' to be an int >= 1, got 0"):
        image_pattern("full", 2, 2, batch_size=0)
    with pytest.raises(ValueError, match="Expected 'metric' in"):
        image_pattern("grid2d", 2, 2, metric="cosine")


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ImageSplit:
    return load_digits_split()


def test_digits_split_sizes_values_and_stratification(digits: ImageSplit) -> None:
    from sklearn.datasets import load_digits

    original = load_digits()
    train, test = digits
    assert isinstance(train, LabeledImages) and len(DIGIT_CLASSES) == 10
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == train.indices.dtype == torch.long
    everything = torch.cat([train.indices, test.indices]).sort().values
    assert torch.equal(everything, torch.arange(1797))  # disjoint, and together all images
    for part in digits:
        assert torch.equal(part.indices, part.indices.sort().values)
        assert torch.equal(part.labels, torch.from_numpy(original.target[part.indices.numpy()]))
        scaled = original.images[part.indices.numpy()] / 16
        torch.testing.assert_close(part.images[:, 0], torch.from_numpy(scaled).float())
        assert float(part.images.min()) == 0.0 and float(part.images.max()) == 1.0
    counts = torch.bincount(torch.from_numpy(original.target), minlength=10)
    assert torch.equal(torch.bincount(test.labels, minlength=10), torch.round(counts * 0.2).long())  # stratified
    assert torch.equal(torch.bincount(train.labels, minlength=10), counts - torch.round(counts * 0.2).long())


def test_digits_split_is_deterministic_and_seeded(digits: ImageSplit) -> None:
    again = load_digits_split(0.2, 0)
    assert all(torch.equal(a, b) for a, b in zip(again.test, digits.test))
    other = load_digits_split(0.2, seed=1)
    assert not torch.equal(other.test.indices, digits.test.indices)
    assert torch.equal(torch.bincount(other.test.labels), torch.bincount(digits.test.labels))
    half = load_digits_split(test_fraction=0.5)
    assert abs(len(half.test.labels) - 1797 / 2) <= 5


def test_digits_split_resizes_and_matches_the_lra_digits(digits: ImageSplit) -> None:
    big = load_digits_split(size=32)
    assert big.test.images.shape == (359, 1, 32, 32) and torch.equal(big.test.indices, digits.test.indices)
    assert 0.0 <= float(big.test.images.min()) and float(big.test.images.max()) <= 1.0
    expected = F.interpolate(digits.test.images.double(), size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(big.test.images, expected.float())
    lra_test = lra.load_digits32("test")  # the same held-out images as the LRA-style pixel-sequence task
    assert torch.equal(lra_test.labels, big.test.labels)
    tokens = torch.stack(lra_test.tokens) - 1  # grey levels 0..255
    assert torch.equal(tokens, torch.from_numpy(lra.quantize(big.test.images.double().numpy(), 256)).flatten(1))


def test_digits_split_errors() -> None:
    for fraction in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="Expected 0 < test_fraction < 1"):
            load_digits_split(test_fraction=fraction)
    with pytest.raises(ValueError, match="'size' to be an int >= 1"):
        load_digits_split(size=0)
    with pytest.raises(ValueError, match="seed"):
        load_digits_split(seed=-1)


# ----------------------------------------------------------------------------------------------
# attention maps
# ----------------------------------------------------------------------------------------------


def test_attention_map_of_a_trained_style_encoder_is_local_and_sums_to_one() -> None:
    from graphattn.data.image import attention_map
    from graphattn.models import SequenceClassifier, TransformerConfig, Vectors

    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=4, input_features=1, d_model=16, num_heads=2, num_layers=2, position="learned",
        max_positions=36, encoder_pattern="grid2d(width=6, radius=1)",
    )
    model = SequenceClassifier(config, num_classes=3).eval()
    images = random_images(3, 1, 6, 6)
    layers = model.encoder.attention_weights(Vectors(image_to_nodes(images), torch.full((3,), 36)))
    assert len(layers) == 2
    graph, weights = layers[1]
    assert weights.shape == (graph.num_edges, 2)
    neighbourhood = patterns.grid2d(6, 6, 1).to_dense()  # [36, 36]
    for image in range(3):
        for query in [(0, 0), (2, 3), (5, 5), 17]:
            node = query if isinstance(query, int) else query[0] * 6 + query[1]
            for head in (None, 0, 1):
                heat = attention_map(graph, weights, query, 6, 6, image=image, head=head)
                assert heat.shape == (6, 6) and float(heat.min()) >= 0
                torch.testing.assert_close(heat.sum(), torch.tensor(1.0))
                assert float(heat.flatten()[~neighbourhood[node]].abs().max()) == 0.0  # zero outside the 3x3
    corner = attention_map(graph, weights, (0, 0), 6, 6, image=2)
    assert bool((corner[:2, :2] > 0).all())  # softmax weights are positive on every edge
    mean = attention_map(graph, weights, 14, 6, 6)
    torch.testing.assert_close(
        mean, (attention_map(graph, weights, 14, 6, 6, head=0) + attention_map(graph, weights, 14, 6, 6, head=1)) / 2
    )


def test_attention_map_full_pattern_and_errors() -> None:
    from graphattn.data.image import attention_map

    graph = image_pattern("full", 2, 3, batch_size=2)
    weights = torch.arange(graph.num_edges, dtype=torch.float32)  # one head, edge ids as weights
    heat = attention_map(graph, weights, (1, 2), 2, 3, image=1)  # node 6 + 5 = 11: edges 66..71
    assert heat.flatten().tolist() == [66.0, 67.0, 68.0, 69.0, 70.0, 71.0]
    with pytest.raises(TypeError, match="AttentionGraph"):
        attention_map(graph.to_dense(), weights, 0, 2, 3)
    with pytest.raises(ValueError, match=r"'weights' of shape \[num_edges, heads\] with num_edges = 72"):
        attention_map(graph, weights[:5], 0, 2, 3)
    with pytest.raises(ValueError, match=r"'query' in \[0, 5\]"):
        attention_map(graph, weights, 6, 2, 3)
    with pytest.raises(ValueError, match="inside the 2x3 image"):
        attention_map(graph, weights, (2, 0), 2, 3)
    with pytest.raises(ValueError, match=r"'image' in \[0, 1\]"):
        attention_map(graph, weights, 0, 2, 3, image=2)
    with pytest.raises(ValueError, match=r"'head' in \[0, 0\]"):
        attention_map(graph, weights, 0, 2, 3, head=1)


# ----------------------------------------------------------------------------------------------
# the CNN baseline
# ----------------------------------------------------------------------------------------------


def test_image_cnn_shapes_parameters_and_repr() -> None:
    from graphattn.models import ImageCNN, count_parameters

    torch.manual_seed(0)
    model = ImageCNN(in_channels=1, num_classes=10)
    assert model(random_images(4, 1, 8, 8)).shape == (4, 10)
    assert count_parameters(model) == 65834
    assert repr(model).startswith("ImageCNN(\n  in_channels=1, num_classes=10, channels=(32, 64), kernel_size=3, dropout=0.0")
    colour = ImageCNN(in_channels=3, num_classes=2, channels=[8], kernel_size=5, dropout=0.5).eval()
    for height, width in [(1, 1), (5, 3), (32, 32)]:  # any size: ceil-mode pooling, global average
        assert colour(random_images(2, 3, height, width)).shape == (2, 2)
    logits = colour(random_images(3, 3, 6, 6))
    torch.testing.assert_close(colour(random_images(3, 3, 6, 6)[1:2]), logits[1:2])  # eval: per image
    logits.sum().backward()
    assert all(p.grad is not None for p in colour.parameters())


def test_image_cnn_errors() -> None:
    from graphattn.models import ImageCNN

    with pytest.raises(ValueError, match="'num_classes' to be an int >= 2, got 1"):
        ImageCNN(num_classes=1)
    with pytest.raises(ValueError, match="'in_channels' to be a positive int, got 0"):
        ImageCNN(in_channels=0)
    with pytest.raises(ValueError, match="non-empty sequence of positive ints"):
        ImageCNN(channels=())
    with pytest.raises(ValueError, match="non-empty sequence of positive ints"):
        ImageCNN(channels=32)
    with pytest.raises(ValueError, match="'channels\\[\\]' to be a positive int, got -4"):
        ImageCNN(channels=(8, -4))
    with pytest.raises(ValueError, match="odd 'kernel_size'.*use 3 or 5"):
        ImageCNN(kernel_size=4)
    with pytest.raises(ValueError, match="0 <= dropout < 1"):
        ImageCNN(dropout=1.0)
    model = ImageCNN(in_channels=1)
    with pytest.raises(ValueError, match=r"images of shape \[B, 1, H, W\], got \[2, 8, 8\].*unsqueeze\(1\)"):
        model(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"images of shape \[B, 1, H, W\], got \[2, 3, 8, 8\]"):
        model(torch.zeros(2, 3, 8, 8))
