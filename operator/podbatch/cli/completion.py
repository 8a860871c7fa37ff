"""Shell completion for `kubectl podbatch`, from the argparse parser itself.

One engine answers every shell: `kubectl-podbatch __complete WORDS… CURRENT` prints the
candidates for CURRENT, one a line, then a line `:DIRECTIVE` — the protocol of cobra's
`__complete`, which kubectl (≥ 1.26) speaks with a plugin's `kubectl_complete-<plugin>`
executable. So `kubectl podbatch <TAB>` completes through kubectl's own completion once
`kubectl_complete-podbatch` (installed with the package) is on PATH, and the bash and zsh
scripts of `kubectl podbatch completion bash|zsh` complete `kubectl-podbatch` typed directly.
Names of jobs, pools, nodes, tasks and schedules come from the cluster (a failure there
only means no names).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

DIRECTIVE_DEFAULT = 0     # cobra: the shell may complete file names
DIRECTIVE_NO_FILES = 4    # cobra ShellCompDirectiveNoFileComp
ARG_KINDS = {"job": "Job", "pool": "Pool", "node": "ComputeNode", "task": "Task", "schedule": "JobSchedule"}
FILE_OPTIONS = ("-f", "--filename", "--kubeconfig")
CONNECTION_OPTIONS = {"--kubeconfig": "kubeconfig", "--context": "context", "-n": "namespace", "--namespace": "namespace"}

NameLookup = Callable[[str, dict], list]   # (kind, connection options) -> object names


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def complete(parser: argparse.ArgumentParser, words: Sequence[str],
             names: NameLookup | None = None) -> tuple[list[str], int]:
    """(candidates, directive) for the last of `words` (the words after the program name;
    the last is the one being completed, possibly empty)."""
    *before, current = list(words) or [""]
    connection: dict[str, str] = {}
    pending: argparse.Action | None = None   # an option waiting for its value
    n_positional = 0
    for word in before:
        if pending is not None:
            for o in pending.option_strings:
                if o in CONNECTION_OPTIONS:
                    connection[CONNECTION_OPTIONS[o]] = word
            pending = None
            continue
        if word.startswith("-") and word != "-":
            opt, eq, value = word.partition("=")
            action = parser._option_string_actions.get(opt)
            if action is not None and _takes_value(action):
                if eq:
                    if opt in CONNECTION_OPTIONS:
                        connection[CONNECTION_OPTIONS[opt]] = value
                else:
                    pending = action
            continue
        sub = _subparsers(parser)
        if sub is not None and word in sub.choices:
            parser, n_positional = sub.choices[word], 0
        else:
            n_positional += 1

    if pending is not None:   # completing an option's value
        if pending.choices:
            return _matching(pending.choices, current), DIRECTIVE_NO_FILES
        if set(pending.option_strings) & set(FILE_OPTIONS):
            return [], DIRECTIVE_DEFAULT
        return [], DIRECTIVE_NO_FILES
    if current.startswith("-"):
        opts = [o for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
        return _matching(opts, current), DIRECTIVE_NO_FILES
    sub = _subparsers(parser)
    if sub is not None:
        return _matching([a.dest for a in sub._choices_actions], current), DIRECTIVE_NO_FILES
    positionals = _positionals(parser)
    if n_positional < len(positionals):
        action = positionals[n_positional]
        if action.choices:
            return _matching(action.choices, current), DIRECTIVE_NO_FILES
        kind = ARG_KINDS.get(action.dest)
        if kind and names is not None:
            try:
                return _matching(names(kind, connection), current), DIRECTIVE_NO_FILES
            except Exception:  # noqa: BLE001 - no cluster, no names
                return [], DIRECTIVE_NO_FILES
    return [], DIRECTIVE_NO_FILES


def _matching(candidates, prefix: str) -> list[str]:
    return [str(c) for c in candidates if str(c).startswith(prefix)]


def cluster_names(kind: str, connection: dict, timeout: float = 5) -> list[str]:
    """Names of the objects of `kind` in the namespace the command line names."""
    from podbatch import GROUP, VERSION
    from podbatch.cli.kube import new_client, plural
    from kubernetes import client
    api, default_ns = new_client(connection.get("kubeconfig"), connection.get("context"))
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, connection.get("namespace") or default_ns, plural(kind), _request_timeout=timeout)["items"]
    return sorted(o["metadata"]["name"] for o in items)


def main(words: Sequence[str], parser: argparse.ArgumentParser, out=None) -> int:
    """`kubectl-podbatch __complete WORDS…`: candidates, then `:DIRECTIVE` (cobra's protocol)."""
    candidates, directive = complete(parser, words, cluster_names)
    out = out or sys.stdout
    for c in candidates:
        print(c, file=out)
    print(f":{directive}", file=out)
    return 0


def kubectl_complete_main() -> int:
    """`kubectl_complete-podbatch`: what kubectl ≥ 1.26 runs to complete `kubectl podbatch …`."""
    from podbatch.cli.main import build_parser
    return main(sys.argv[1:], build_parser())


BASH = r'''# bash completion for kubectl-podbatch: source <(kubectl podbatch completion bash)
# (`kubectl podbatch <TAB>` completes through kubectl itself, v1.26+, with kubectl_complete-podbatch on PATH)
_kubectl_podbatch() {
    local IFS=$'\n' lines directive
    lines=($(kubectl-podbatch __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    directive=${lines[${#lines[@]}-1]}
    unset 'lines[${#lines[@]}-1]'
    COMPREPLY=("${lines[@]}")
    if [[ $directive == ":4" ]]; then
        compopt +o default 2>/dev/null
    fi
}
complete -o default -F _kubectl_podbatch kubectl-podbatch
'''

ZSH = r'''#compdef kubectl-podbatch
# zsh completion for kubectl-podbatch: source <(kubectl podbatch completion zsh) after compinit
# (`kubectl podbatch <TAB>` completes through kubectl itself, v1.26+, with kubectl_complete-podbatch on PATH)
_kubectl_podbatch() {
    local -a lines
    local directive
    lines=("${(@f)$(kubectl-podbatch __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    directive=${lines[-1]}
    lines=("${(@)lines[1,-2]}")
    if (( ${#lines} )); then
        compadd -- "${lines[@]}"
    elif [[ $directive == ":0" ]]; then
        _files
    fi
}
compdef _kubectl_podbatch kubectl-podbatch
'''


def script(shell: str) -> str:
    return {"bash": BASH, "zsh": ZSH}[shell]
