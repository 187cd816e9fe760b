"""GraphTransformer (GPS on the graphattn core) and the PyG baselines, against dense references."""
import json
import math

import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from torch_geometric.data import Batch, Data  # noqa: E402

import graphattn  # noqa: E402
import graphattn.models.graph_transformer as gt  # noqa: E402
from graphattn.data.molecule import atom_feature_dims, bond_feature_dims, smiles_to_graph  # noqa: E402
from graphattn.models.baselines import BASELINES, PygGNN, count_parameters  # noqa: E402
from graphattn.models.graph_transformer import (  # noqa: E402
    AddGraphPositionalEncoding,
    BondAttention,
    CategoricalEmbedding,
    GraphPooling,
    GraphTransformer,
    GraphTransformerConfig,
    edge_value_term,
)
from graphattn.nn import laplacian_eigenvector_pe, random_walk_pe  # noqa: E402

MOLECULES = ["CC(=O)Oc1ccccc1", "OC(=O)C#N", "C1CC1N", "[Na+].[Cl-]", "C", "CCO", "c1ccncc1", "O=C=O"]


def mol(smiles: str, featurizer: str = "ogb") -> Data:
    return smiles_to_graph(smiles, featurizer=featurizer)


def batch_of(smiles: list[str], transform=None) -> Batch:
    graphs = [mol(s) for s in smiles]
    if transform is not None:
        graphs = [transform(g) for g in graphs]
    return Batch.from_data_list(graphs)


def empty_molecule() -> Data:
    return Data(
        x=torch.zeros(0, 9, dtype=torch.long),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_attr=torch.zeros(0, 3, dtype=torch.long),
        num_nodes=0,
        smiles="",
    )


def make_model(seed: int = 0, **overrides) -> GraphTransformer:
    settings = dict(hidden_dim=8, num_heads=2, num_layers=2, positional_encoding="none", pe_size=3)
    settings.update(overrides)
    torch.manual_seed(seed)
    return GraphTransformer(GraphTransformerConfig(**settings)).double()


def warm_up(model: torch.nn.Module, batch: Batch) -> None:
    """One training-mode forward so that BatchNorm's running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def permuted(data: Data, node_perm: torch.Tensor, edge_perm: torch.Tensor) -> Data:
    """New node ``n`` is old node ``node_perm[n]``; edges listed in a new order too."""
    inverse = torch.empty_like(node_perm)
    inverse[node_perm] = torch.arange(node_perm.numel())
    return Data(
        x=data.x[node_perm],
        edge_index=inverse[data.edge_index][:, edge_perm],
        edge_attr=data.edge_attr[edge_perm],
        num_nodes=data.num_nodes,
    )


# ====================================================================== dense references
def dense_bond_embeddings(data: Data, encoder: CategoricalEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
    """``e[i, j]`` of every edge ``j -> i`` (self loops: row 0 of every column) ``[N, N, d]``, and
    the allowed mask ``[N, N]`` (bonds and self loops), written edge by edge."""
    n = data.num_nodes
    weights = [embedding.weight for embedding in encoder.embeddings]
    rows = {}
    for i in range(n):
        rows[(i, i)] = sum(w[0] for w in weights)
    for e in range(data.edge_index.size(1)):
        j, i = data.edge_index[:, e].tolist()
        rows[(i, j)] = sum(w[int(data.edge_attr[e, c]) + 1] for c, w in enumerate(weights))
    zero = torch.zeros(encoder.dim, dtype=weights[0].dtype)
    dense = torch.stack([torch.stack([rows.get((i, j), zero) for j in range(n)]) for i in range(n)])
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i, j in rows:
        allowed[i, j] = True
    return dense, allowed


def dense_bond_attention(module: BondAttention, h: torch.Tensor, data: Data, encoder: CategoricalEmbedding) -> torch.Tensor:
    """BondAttention written densely: masked softmax(q k^T / sqrt(D) + bias) (v + W_e e)."""
    attn = module.attn
    n, heads, dim = h.size(0), attn.num_heads, attn.head_dim
    q = attn.q_proj(h).view(n, heads, dim)
    k = attn.k_proj(h).view(n, heads, dim)
    v = attn.v_proj(h).view(n, heads, dim)
    edges, allowed = dense_bond_embeddings(data, encoder)
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(dim)
    if module.kind == "bias":
        scores = scores + torch.einsum("ijc,hc->hij", edges, module.edge_proj.weight)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # [H, N, N]
    out = torch.einsum("hij,jhd->ihd", probs, v)
    if module.kind == "values":
        edge_values = torch.einsum("ijc,hdc->ijhd", edges, module.edge_proj.weight.view(heads, dim, -1))
        out = out + torch.einsum("hij,ijhd->ihd", probs, edge_values)
    return attn.out_proj(out.reshape(n, heads * dim))


@pytest.mark.parametrize("backend", ["csr", "reference"])
@pytest.mark.parametrize("kind", ["bias", "values"])
def test_bond_attention_matches_dense_reference_values_and_gradients(kind, backend, generator):
    data = batch_of(["OC(=O)C#N", "[Na+].[Cl-]", "C1CC1"])
    model = make_model(local_attention=kind, backend=backend)
    module = model.layers[0].local
    context = model.prepare(data)
    h = torch.randn(data.num_nodes, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    context.bond_table = model.bond_encoder.table()
    ours = module(h, context)
    reference = dense_bond_attention(module, h, data, model.bond_encoder)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)

    upstream = torch.randn(ours.shape, dtype=torch.float64, generator=generator)
    params = [h, *module.parameters(), *model.bond_encoder.parameters()]
    grads = torch.autograd.grad((ours * upstream).sum(), params)
    expected = torch.autograd.grad((reference * upstream).sum(), params)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_values_variant_gradcheck_through_the_sparse_core(generator):
    data = batch_of(["OC(=O)C#N"])
    model = make_model(local_attention="values", backend="csr")
    module = model.layers[0].local
    context = model.prepare(data)
    context.bond_table = model.bond_encoder.table().detach()
    h = torch.randn(data.num_nodes, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: module(x, context), (h,))


def test_edge_value_term_with_dropout_factors_gradcheck(generator):
    graph = graphattn.patterns.adjacency(torch.tensor([[0, 1, 1, 2, 3], [1, 0, 2, 1, 1]]), 4)
    heads, dim, types = 2, 3, 5
    q = torch.randn(4, heads, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    k = torch.randn(4, heads, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    table = torch.randn(types, heads, dim, dtype=torch.float64, generator=generator, requires_grad=True)
    edge_types = torch.randint(0, types, (graph.num_edges, 2), generator=generator)
    keep = (torch.rand(graph.num_edges, heads, generator=generator) > 0.3).double() / 0.7
    scale = 1 / math.sqrt(dim)

    def term(q, k, table):
        weights = graphattn.attention(q, k, k, graph, scale=scale, backend="reference", return_weights=True).weights
        return edge_value_term(q, k, table, weights, graph, edge_types, scale=scale, keep_scale=keep)

    assert torch.autograd.gradcheck(term, (q, k, table))
    # and the value itself: sum_j a_ij keep_ij sum_c table[type_ijc]
    weights = graphattn.attention(q, k, k, graph, scale=scale, backend="reference", return_weights=True).weights
    expected = torch.zeros(4, heads, dim, dtype=torch.float64)
    for e, (i, j) in enumerate(zip(graph.row.tolist(), graph.col.tolist())):
        expected[i] += (weights[e] * keep[e]).unsqueeze(1) * table[edge_types[e]].sum(0)
    torch.testing.assert_close(term(q, k, table), expected)


# ====================================================================== invariances
@pytest.mark.parametrize("task_level", ["graph", "node"])
@pytest.mark.parametrize("local", ["none", "bias"])
def test_global_attention_never_crosses_molecules(local, task_level):
    model = make_model(local_attention=local, task_level=task_level, positional_encoding="random_walk")
    first, second = mol("CC(=O)Oc1ccccc1"), mol("OC(=O)C#N")
    warm_up(model, Batch.from_data_list([first, second]))
    changed = second.clone()
    changed.x = changed.x.clone()
    changed.x[:, 0] = torch.tensor([15, 16, 33, 5, 14])  # P, S, As, B, Si instead of O, C, O, C, N
    with torch.no_grad():
        before = model(Batch.from_data_list([first, second]))
        after = model(Batch.from_data_list([first, changed]))
    n1 = first.num_nodes
    rows = slice(0, 1) if task_level == "graph" else slice(0, n1)
    others = slice(1, 2) if task_level == "graph" else slice(n1, None)
    torch.testing.assert_close(after[rows], before[rows], rtol=0, atol=1e-12)
    assert not torch.allclose(after[others], before[others])


@pytest.mark.parametrize(
    "overrides",
    [
        dict(local_attention="bias", positional_encoding="random_walk", pooling="attention"),
        dict(local_attention="values", positional_encoding="laplacian", pooling="sum"),
        dict(local_attention="bias", global_attention=False, norm="layer", task_level="node"),
    ],
)
def test_batch_gives_the_same_per_molecule_outputs_as_each_molecule_alone(overrides):
    model = make_model(**overrides)
    smiles = ["CC(=O)Oc1ccccc1", "[Na+].[Cl-]", "C1CC1N"]
    transform = AddGraphPositionalEncoding("laplacian", 3) if overrides.get("positional_encoding") == "laplacian" else None
    batch = batch_of(smiles, transform)
    warm_up(model, batch)
    with torch.no_grad():
        together = model(batch)
        alone = [model(batch_of([s], transform)) for s in smiles]
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("positional_encoding", ["none", "random_walk"])
@pytest.mark.parametrize("local", ["bias", "values"])
def test_permuting_atoms_permutes_node_outputs_and_keeps_graph_outputs(local, positional_encoding, generator):
    data = mol("CC(=O)Nc1ccc(O)cc1")
    node_perm = torch.randperm(data.num_nodes, generator=generator)
    edge_perm = torch.randperm(data.edge_index.size(1), generator=generator)
    other = permuted(data, node_perm, edge_perm)
    for task_level in ("node", "graph"):
        model = make_model(local_attention=local, positional_encoding=positional_encoding, task_level=task_level)
        warm_up(model, Batch.from_data_list([data, data]))
        with torch.no_grad():
            out, out_permuted = model(Batch.from_data_list([data])), model(Batch.from_data_list([other]))
        expected = out[node_perm] if task_level == "node" else out
        torch.testing.assert_close(out_permuted, expected, rtol=1e-10, atol=1e-12)


def test_permutation_with_laplacian_encodings_up_to_eigenvector_signs(generator):
    """Eigenvector signs are arbitrary, so the check is: the permuted molecule's own Laplacian
    encoding equals the permuted encoding up to one sign per column (distinct eigenvalues make
    that the only freedom), and the model, given the permuted encoding, is equivariant."""
    data = mol("CC(=O)Nc1ccc(O)cc1")
    k = 3
    node_perm = torch.randperm(data.num_nodes, generator=generator)
    other = permuted(data, node_perm, torch.randperm(data.edge_index.size(1), generator=generator))
    adjacency = torch.zeros(data.num_nodes, data.num_nodes, dtype=torch.float64)
    adjacency[data.edge_index[1], data.edge_index[0]] = 1.0
    degree = adjacency.sum(1).rsqrt()
    eigenvalues = torch.linalg.eigvalsh(torch.eye(data.num_nodes) - degree[:, None] * adjacency * degree[None])
    assert (eigenvalues[: k + 2].diff() > 1e-6).all()  # the k + 1 smallest are simple

    pe = laplacian_eigenvector_pe(data.edge_index, data.num_nodes, k)
    pe_other = laplacian_eigenvector_pe(other.edge_index, other.num_nodes, k)
    signs = torch.sign((pe_other * pe[node_perm]).sum(0))
    torch.testing.assert_close(pe_other, pe[node_perm] * signs, rtol=1e-5, atol=1e-5)

    model = make_model(positional_encoding="laplacian", pe_size=k, task_level="node")
    data.lap_pe, other.lap_pe = pe.double(), pe[node_perm].double()
    warm_up(model, Batch.from_data_list([data, data]))
    with torch.no_grad():
        out, out_permuted = model(Batch.from_data_list([data])), model(Batch.from_data_list([other]))
    torch.testing.assert_close(out_permuted, out[node_perm], rtol=1e-10, atol=1e-12)


# ====================================================================== pieces
@pytest.mark.parametrize("kind", ["sum", "mean", "attention"])
def test_pooling_matches_a_loop_over_graphs(kind, generator):
    torch.manual_seed(0)
    pooling = GraphPooling(kind, 4).double()
    h = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    batch = torch.tensor([0, 0, 1, 1, 1, 3])  # graph 2 has no nodes
    out = pooling(h, batch, 4)
    for g in range(4):
        rows = h[batch == g]
        if kind == "sum":
            expected = rows.sum(0)
        elif kind == "mean":
            expected = rows.mean(0) if len(rows) else torch.zeros(4, dtype=torch.float64)
        else:
            gate = pooling.gate[2](torch.relu(pooling.gate[0](rows))).squeeze(1)
            expected = (torch.softmax(gate, 0).unsqueeze(1) * rows).sum(0)
        torch.testing.assert_close(out[g], expected)


def test_categorical_embedding_sums_one_table_per_column():
    torch.manual_seed(0)
    embed = CategoricalEmbedding([3, 2, 4], 5)
    x = torch.tensor([[2, 1, 3], [0, 0, 0]])
    expected = torch.stack([sum(embed.embeddings[c].weight[x[n, c]] for c in range(3)) for n in range(2)])
    torch.testing.assert_close(embed(x), expected)
    assert embed.table().shape == (9, 5)
    assert repr(embed) == "CategoricalEmbedding(\n  feature_dims=[3, 2, 4], dim=5\n  (embeddings): ModuleList(\n    (0): Embedding(3, 5)\n    (1): Embedding(2, 5)\n    (2): Embedding(4, 5)\n  )\n)"
    with pytest.raises(ValueError, match=r"feature column 1 of 'x' in \[0, 2\), found 2"):
        embed(torch.tensor([[0, 2, 0]]))


def test_attention_graphs_are_built_once_per_forward(monkeypatch):
    calls = {"adjacency": 0, "full_per_graph": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(gt, "adjacency", counted("adjacency", gt.adjacency))
    monkeypatch.setattr(gt, "full_per_graph", counted("full_per_graph", gt.full_per_graph))
    model = make_model(num_layers=3)
    model(batch_of(MOLECULES[:3]))
    assert calls == {"adjacency": 1, "full_per_graph": 1}


def test_positional_encoding_transform_and_on_the_fly_computation_agree():
    smiles = ["CC(=O)Oc1ccccc1", "C1CC1N", "C"]
    for kind, attribute, function in (
        ("laplacian", "lap_pe", lambda d: laplacian_eigenvector_pe(d.edge_index, d.num_nodes, 3)),
        ("random_walk", "rw_pe", lambda d: random_walk_pe(d.edge_index, d.num_nodes, 3)),
    ):
        transform = AddGraphPositionalEncoding(kind, 3)
        data = mol(smiles[0])
        transformed = transform(data)
        assert not hasattr(data, attribute)  # the input is not modified
        torch.testing.assert_close(getattr(transformed, attribute), function(data))
        model = make_model(positional_encoding=kind)
        warm_up(model, batch_of(smiles))
        with torch.no_grad():
            precomputed = model(batch_of(smiles, transform))
            on_the_fly = model(batch_of(smiles))
        torch.testing.assert_close(precomputed, on_the_fly, rtol=1e-6, atol=1e-6)
    assert repr(AddGraphPositionalEncoding("random_walk", 3)) == "AddGraphPositionalEncoding('random_walk', 3)"
    with pytest.raises(ValueError, match="Expected kind 'laplacian' or 'random_walk', got 'none'"):
        AddGraphPositionalEncoding("none", 3)
    wrong = batch_of(smiles, AddGraphPositionalEncoding("random_walk", 5))
    with pytest.raises(ValueError, match=r"data.rw_pe' float tensor of shape \[N, pe_size\] = \[\d+, 3\], got \[\d+, 5\]"):
        make_model(positional_encoding="random_walk")(wrong)


# ====================================================================== edge cases
@pytest.mark.parametrize("local", ["bias", "values", "none"])
@pytest.mark.parametrize("positional_encoding", ["laplacian", "random_walk"])
def test_empty_molecules_single_atoms_and_molecules_without_bonds(local, positional_encoding):
    data = [mol("C"), mol("[Na+].[Cl-]"), empty_molecule(), mol("CCO"), mol("[He]")]
    batch = Batch.from_data_list(data)
    for task_level in ("graph", "node"):
        for pooling in ("sum", "mean", "attention"):
            model = make_model(
                local_attention=local, global_attention=True, positional_encoding=positional_encoding,
                pooling=pooling, task_level=task_level, attention_dropout=0.2, dropout=0.1,
            )
            model.train()
            out = model(batch)
            assert out.shape == ((5, 1) if task_level == "graph" else (batch.num_nodes, 1))
            out.sum().backward()
            assert torch.isfinite(out).all()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
            model.eval()
            with torch.no_grad():
                for single in (Batch.from_data_list([mol("C")]), Batch.from_data_list([empty_molecule()])):
                    assert torch.isfinite(model(single)).all()
    # a lone atom also trains (BatchNorm falls back to its running statistics)
    model = make_model(local_attention=local).train()
    model(Batch.from_data_list([mol("C")])).sum().backward()
    if local == "none":
        return
    # an empty molecule pools to zero: its output is the head applied to a zero vector
    model.eval()
    with torch.no_grad():
        out = model(Batch.from_data_list([mol("CCO"), empty_molecule()]))
        torch.testing.assert_close(out[1], model.head(torch.zeros(8, dtype=torch.float64)))


# ====================================================================== training
def test_a_few_optimizer_steps_fit_eight_molecules():
    torch.manual_seed(0)
    model = GraphTransformer(GraphTransformerConfig(hidden_dim=16, num_heads=2, num_layers=2, pe_size=4, num_tasks=2))
    batch = batch_of(MOLECULES)
    target = torch.randn(len(MOLECULES), 2, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses


# ====================================================================== config and bad input
def test_config_round_trip_and_vocabularies():
    config = GraphTransformerConfig(featurizer="zinc", atom_feature_dims=[30], pooling="attention", ff_dim=12)
    assert config.atom_dims == (30,) and config.bond_dims == tuple(bond_feature_dims("zinc"))
    assert GraphTransformerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert GraphTransformerConfig().atom_dims == tuple(atom_feature_dims("ogb"))
    assert GraphTransformerConfig().feed_forward_dim == 128


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(hidden_dim=10, num_heads=4), ValueError, "Expected hidden_dim divisible by num_heads, got hidden_dim=10"),
        (dict(local_attention="edges"), ValueError, "Unknown local_attention 'edges'; expected one of 'bias', 'values', 'none'"),
        (dict(local_attention="none", global_attention=False), ValueError, "Expected at least one attention branch"),
        (dict(dropout=1.0), ValueError, "Expected 0 <= dropout < 1, got 1.0"),
        (dict(pooling="max"), ValueError, "Unknown pooling 'max'"),
        (dict(featurizer="morgan"), ValueError, "Unknown featurizer 'morgan'"),
        (dict(num_layers=0), ValueError, "Expected 'num_layers' to be a positive int, got 0"),
        (dict(atom_feature_dims=[3, 0]), ValueError, "Expected 'atom_feature_dims' to hold positive ints"),
        (dict(global_attention="yes"), TypeError, "Expected 'global_attention' to be True or False"),
    ],
)
def test_config_rejects_bad_settings(overrides, error, message):
    with pytest.raises(error, match=message):
        GraphTransformerConfig(**overrides)
    with pytest.raises(ValueError, match=r"Unknown GraphTransformerConfig fields \['width'\]"):
        GraphTransformerConfig.from_dict({"width": 3})


def test_forward_rejects_bad_batches():
    model = make_model()
    good = mol("CCO")
    floats = good.clone()
    floats.x = floats.x.double()
    with pytest.raises(TypeError, match=r"Expected 'x' to hold integer atom feature indices \[N, 9\], got 'torch.float64'"):
        model(floats)
    zinc = mol("CCO", featurizer="zinc")
    with pytest.raises(ValueError, match=r"Expected 'x' of shape \[N, 9\] \(9 atom feature columns\), got \[3, 1\]"):
        model(zinc)
    out_of_range = good.clone()
    out_of_range.x = out_of_range.x.clone()
    out_of_range.x[0, 1] = 7
    with pytest.raises(ValueError, match=r"atom feature column 1 of 'x' in \[0, 5\), found 7"):
        model(out_of_range)
    no_bonds = Data(x=good.x, edge_index=good.edge_index)
    with pytest.raises(ValueError, match=r"Expected 'edge_attr' \[E, 3\] .* or use local_attention='none'"):
        model(no_bonds)
    assert make_model(local_attention="none")(no_bonds).shape == (1, 1)
    with pytest.raises(TypeError, match="Expected a PyG Data/Batch with 'x'"):
        model(torch.zeros(3, 9))
    # a ZINC-featurized batch with the ZINC vocabulary works
    zinc_model = make_model(featurizer="zinc")
    assert zinc_model(Batch.from_data_list([zinc, mol("c1ccccc1", "zinc")])).shape == (2, 1)


# ====================================================================== baselines
@pytest.mark.parametrize("kind", BASELINES)
def test_pyg_baselines_run_forward_backward_in_the_same_harness(kind):
    torch.manual_seed(0)
    config = GraphTransformerConfig(hidden_dim=16, num_heads=2, num_layers=2, positional_encoding="random_walk", pe_size=4, num_tasks=3)
    model = PygGNN.from_config(kind, config)
    batch = batch_of(MOLECULES[:5])
    out = model(batch)
    assert out.shape == (5, 3)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    node_model = PygGNN(kind, hidden=16, layers=2, heads=2, task_level="node", num_tasks=2)
    assert node_model(batch).shape == (batch.num_nodes, 2)
    assert PygGNN(**model.settings).settings == model.settings
    ours = count_parameters(GraphTransformer(config))
    theirs = count_parameters(model)
    assert 0.2 * ours < theirs < 5 * ours  # same order of size at equal width and depth


def test_baseline_parameter_counts_match_hand_counts():
    d, layers, atoms, bonds = 16, 3, sum(atom_feature_dims()), sum(bond_feature_dims())
    head = d * d + d + d * 1 + 1
    gcn = PygGNN("gcn", hidden=d, layers=layers)
    assert count_parameters(gcn) == atoms * d + layers * (d * d + d + 2 * d) + head
    gin = PygGNN("gin", hidden=d, layers=layers)
    gin_layer = 1 + (d * 2 * d + 2 * d) + (2 * d * d + d) + bonds * d + 2 * d  # eps, MLP, bond table, BatchNorm
    assert count_parameters(gin) == atoms * d + layers * gin_layer + head
    gin.atom_encoder.requires_grad_(False)
    assert count_parameters(gin) == layers * gin_layer + head
    assert count_parameters(gin, trainable_only=False) == atoms * d + layers * gin_layer + head
    with pytest.raises(ValueError, match="Unknown kind 'gine'; expected one of 'gin', 'gcn', 'gat', 'gps'"):
        PygGNN("gine")
    with pytest.raises(ValueError, match="Expected hidden divisible by heads for 'gat', got hidden=10, heads=4"):
        PygGNN("gat", hidden=10)
    with pytest.raises(TypeError, match="Expected an nn.Module, got int"):
        count_parameters(3)


@pytest.mark.parametrize("kind", ["graph_transformer", "gin"])
def test_graph_features_join_the_pooled_state_per_molecule(kind):
    torch.manual_seed(0)
    config = GraphTransformerConfig(hidden_dim=16, num_heads=2, num_layers=1, graph_feature_dim=3)
    model = (GraphTransformer(config) if kind == "graph_transformer" else PygGNN.from_config("gin", config)).eval()
    graphs = [smiles_to_graph(s) for s in ("CCO", "c1ccccc1", "CC(=O)O")]
    for index, graph in enumerate(graphs):
        graph.graph_features = torch.full((1, 3), float(index))
    batch = Batch.from_data_list(graphs)
    out = model(batch)
    assert out.shape == (3, 1)
    # a molecule's output depends on its own features only
    changed = [g.clone() for g in graphs]
    changed[1].graph_features = torch.full((1, 3), 7.0)
    again = model(Batch.from_data_list(changed))
    assert torch.equal(again[[0, 2]], out[[0, 2]]) and not torch.equal(again[1], out[1])
    del batch.graph_features
    with pytest.raises(ValueError, match=r"graph_feature_dim=3: expected 'graph_features' \[3, 3\]"):
        model(batch)
    batch.graph_features = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"shape \[3, 3\]"):
        model(batch)


def test_graph_features_need_graph_level_tasks():
    with pytest.raises(ValueError, match="needs task_level='graph'"):
        GraphTransformerConfig(graph_feature_dim=2, task_level="node")
    with pytest.raises(ValueError, match="non-negative int"):
        GraphTransformerConfig(graph_feature_dim=-1)
