"""Large-star / small-star connected components against scipy on the same graphs."""
import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components as scipy_components

from pipelines.components import connected_components


def expected_labels(edges):
    edges = [(a, b) for a, b in edges if a != b]  # a self-loop alone makes no component
    nodes = sorted({n for e in edges for n in e})
    index = {n: i for i, n in enumerate(nodes)}
    g = sparse.coo_matrix(
        ([1] * len(edges), ([index[a] for a, _ in edges], [index[b] for _, b in edges])),
        shape=(len(nodes), len(nodes)),
    )
    _, comp = scipy_components(g, directed=False)
    smallest = {}
    for n in nodes:
        smallest.setdefault(comp[index[n]], n)
    return {n: smallest[comp[index[n]]] for n in nodes}


def run(spark, edges, local_edges=0):
    """Labels and rounds; `local_edges` = 0 forces Spark's rounds, a large one the driver's scipy."""
    df = spark.createDataFrame(edges, "src long, dst long")
    labels, rounds = connected_components(df, local_edges=local_edges)
    return {r["node"]: r["component"] for r in labels.collect()}, rounds


def graphs():
    rng = np.random.default_rng(3)
    chain = [(i, i + 1) for i in range(100)]                          # a long path: many rounds
    shuffled_chain = [(int(a), int(b)) for a, b in zip(rng.permutation(150), rng.permutation(150))]
    star = [(1000, i) for i in range(1001, 1100)]
    random = [(int(a), int(b)) for a, b in rng.integers(0, 400, size=(300, 2))]
    big = [(1 << 45 | 7, 3), (3, 1 << 41), (5, 5)]                     # large ids, self-loop
    return {"chain": chain, "shuffled_chain": shuffled_chain, "star": star, "random": random, "big": big}


@pytest.mark.parametrize("name", list(graphs()))
def test_components_match_scipy(spark, name):
    edges = graphs()[name]
    got, rounds = run(spark, edges)
    assert got == expected_labels(edges)
    if name == "star":
        assert rounds == 0          # already a star around its smallest node
    if name == "chain":
        assert rounds >= 2


@pytest.mark.parametrize("name", list(graphs()))
def test_a_small_graph_solved_on_the_driver_gives_the_same_labels(spark, name):
    edges = graphs()[name]
    got, rounds = run(spark, edges, local_edges=10_000)
    assert got == expected_labels(edges) and rounds == 0


@pytest.mark.parametrize("local_edges", [0, 10])
def test_an_empty_graph_has_no_labels(spark, local_edges):
    got, rounds = run(spark, [], local_edges)
    assert got == {} and rounds == 0
