"""components: the one-program Triton kernel gives every node its component's smallest node,
as scipy's union-find and the torch hooking do, on random graphs, long paths in random order
(many rounds), stars, self-loops and repeated edges, natively on CUDA or interpreted; every
run the same labels; bad arguments are refused."""

from __future__ import annotations

import pytest
import torch

from kernels.components import components_one_program
from pipeline.face_graph import ONE_PROGRAM_MAX_EDGES, components_hooking, components_scipy


def random_graph(seed: int, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randint(0, n, (m,), generator=generator)
    b = torch.randint(0, n, (m,), generator=generator)
    return a, b


def mesh_like(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paths of random lengths over a random order of the nodes, with some cross links: long
    chains (many hooking rounds) and components of every size."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    keep = torch.rand(n - 1, generator=generator) < 0.995
    a, b = order[:-1][keep], order[1:][keep]
    cross = torch.randint(0, n, (2, n // 50), generator=generator)
    return torch.cat((a, cross[0])), torch.cat((b, cross[1]))


def check(n: int, a: torch.Tensor, b: torch.Tensor, device: str) -> None:
    labels = components_one_program(n, a.to(device), b.to(device))
    assert labels.dtype == torch.int64 and labels.device.type == device
    expected = components_scipy(n, a, b)
    assert torch.equal(labels.cpu(), expected)
    assert torch.equal(components_one_program(n, a.to(device), b.to(device)).cpu(), expected)


@pytest.mark.parametrize(("seed", "n", "m"), [(0, 1, 1), (1, 7, 3), (2, 500, 300), (3, 3000, 2900)])
def test_random_graphs_get_their_smallest_nodes(
    triton_device: str, seed: int, n: int, m: int
) -> None:
    check(n, *random_graph(seed, n, m), triton_device)


@pytest.mark.parametrize("n", [2, 2049, 6000])
def test_long_paths_in_random_order(triton_device: str, n: int) -> None:
    check(n, *mesh_like(n, n), triton_device)


@pytest.mark.parametrize("reverse", [False, True])
def test_paths_numbered_in_order(triton_device: str, reverse: bool) -> None:
    # Every hook lands one node below: the longest chains the jumping meets.
    a, b = torch.arange(0, 4999), torch.arange(1, 5000)
    keep = torch.arange(4999) % 1000 != 999  # five paths of 1000 nodes
    a, b = (b[keep], a[keep]) if reverse else (a[keep], b[keep])
    check(5000, a, b, triton_device)


def test_one_chain_through_every_node_is_one_component(triton_device: str) -> None:
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(4))
    labels = components_one_program(5000, order[:-1].to(triton_device), order[1:].to(triton_device))
    assert torch.equal(labels.cpu(), torch.zeros(5000, dtype=torch.int64))


def test_stars_self_loops_and_repeated_edges(triton_device: str) -> None:
    hub = torch.full((400,), 399)
    leaves = torch.arange(400)  # leaf 399 is the hub itself: a self-loop
    a = torch.cat((hub, leaves, leaves[:50], torch.tensor([1000, 1000])))
    b = torch.cat((leaves, hub, hub[:50], torch.tensor([1000, 1001])))
    check(1200, a, b, triton_device)


def test_the_largest_graph_it_takes_on_the_gpu(full_size: bool) -> None:
    if not full_size:
        pytest.skip("native GPU only")
    n = ONE_PROGRAM_MAX_EDGES
    a, b = mesh_like(7, n)
    a, b = a[:ONE_PROGRAM_MAX_EDGES], b[:ONE_PROGRAM_MAX_EDGES]
    check(n, a, b, "cuda")
    assert torch.equal(
        components_one_program(n, a.cuda(), b.cuda()).cpu(), components_hooking(n, a, b)
    )


def test_no_edges_and_no_nodes() -> None:
    none = torch.zeros(0, dtype=torch.int64)
    assert torch.equal(components_one_program(4, none, none), torch.arange(4))
    assert components_one_program(0, none, none).shape == (0,)


def test_bad_arguments_are_refused() -> None:
    a, b = random_graph(0, 10, 5)
    with pytest.raises(ValueError, match="int64"):
        components_one_program(10, a.int(), b.int())
    with pytest.raises(ValueError, match=r"\[m\]"):
        components_one_program(10, a, b[:4])
    with pytest.raises(ValueError, match="at least 0"):
        components_one_program(-1, a, b)
