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


def test_dependency_action_by_how_the_task_failed():
    from podbatch.core.tasks import dependency_action
    spec = {"exitConditions": {"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}],
                               "preProcessingError": {"dependencyAction": "satisfy"},
                               "default": {"dependencyAction": "block"}}}
    failed = lambda code, exit_code=None: {"executionInfo": {"result": "failure", "exitCode": exit_code,
                                                             "failureInfo": {"code": code}}}
    assert dependency_action(spec, {"executionInfo": {"result": "success"}}) == "satisfy"
    assert dependency_action(spec, failed("FailureExitCode", 3)) == "satisfy"
    assert dependency_action(spec, failed("FailureExitCode", 4)) == "block"
    assert dependency_action(spec, failed("BlobNotFound")) == "satisfy"
    assert dependency_action(spec, failed("FileUploadError", 0)) == "block"
    assert dependency_action({}, failed("FailureExitCode", 1)) == "block"
