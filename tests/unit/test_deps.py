from podbatch.core.deps import find_cycle, wanted_ids


def test_wanted_ids_expands_ranges():
    assert wanted_ids({"taskIds": ["a"], "taskIdRanges": [{"start": 1, "end": 3}]}) == ["a", "1", "2", "3"]
    assert wanted_ids(None) == []


def test_find_cycle():
    assert find_cycle({"A": [], "B": ["A"], "C": ["A", "B"]}) is None
    cycle = find_cycle({"A": ["C"], "B": ["A"], "C": ["B"], "D": []})
    assert cycle[0] == cycle[-1] and set(cycle) == {"A", "B", "C"}
    assert find_cycle({"A": ["A"]}) == ["A", "A"]
    assert find_cycle({"A": ["missing"]}) is None
