"""Unit tests of the distributed pieces that need no second process: environment, sharding, plans, launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgcls.config import RunConfig
from imgcls.errors import ConfigError, UsageError
from imgcls.train.distributed import DistEnv, lr_scale, shard
from imgcls.train.epoch import StepPlan
from imgcls.train.launch import Launch, worker_args

ROOT = Path(__file__).resolve().parents[2]


def test_env_is_read_from_torchrun_variables_and_defaults_to_one_process():
    assert DistEnv.from_environ({}) == DistEnv()
    env = DistEnv.from_environ(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "1"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.restart_count) == (3, 4, 1, 2, 1)
    assert env.enabled and not env.is_primary
    # One process per replica (a PyTorchJob or Vertex AI job without torchrun): alone on its machine, all its cores.
    replica = DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "4"})
    assert (replica.rank, replica.local_rank, replica.local_world_size) == (1, 0, 1)
    # A local rank without the local world size: the peers on this machine are unknown, none is left out.
    assert DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).local_world_size == 4
    with pytest.raises(ConfigError, match="RANK"):
        DistEnv.from_environ({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="inconsistent"):
        DistEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("n", [0, 1, 7, 179, 180])
def test_evaluation_shards_cover_every_image_once_without_padding(n):
    world = 4
    shards = [list(shard(n, DistEnv(rank=r, world_size=world, local_world_size=world))) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # no duplicate, no missing image
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_gather_rows_is_the_identity_in_one_process():
    import torch

    rows = torch.arange(12.0).view(6, 2)
    from imgcls.train.distributed import gather_rows

    assert torch.equal(gather_rows(DistEnv(), rows, 6), rows)


def test_each_rank_trains_on_its_slice_of_the_same_global_batch():
    import torch

    cfg = RunConfig.model_validate({"train": {"batch_size": 8, "epochs": 2}})
    plans = [StepPlan.for_run(cfg, 100, world_size=3, rank=r) for r in range(3)]
    assert {p.global_batch for p in plans} == {24} and plans[0].steps_per_epoch == 4  # 100 // 24, drop_last
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    for step in range(1, 5):
        parts = [p.step_indices(order, step) for p in plans]
        joined = torch.cat(parts)
        assert torch.equal(joined, order[(step - 1) * 24 : step * 24])  # the ranks' slices tile the global batch
    single = StepPlan.for_run(cfg, 100)
    assert (single.batch, single.steps_per_epoch, single.global_batch) == (8, 12, 8)


def test_learning_rate_scaling_rules():
    assert lr_scale("none", 8) == 1.0 and lr_scale("linear", 8) == 8.0 and lr_scale("sqrt", 4) == 2.0
    cfg = RunConfig.model_validate({"optim": {"lr": 0.1}, "distributed": {"lr_scaling": "sqrt"}})
    plan = StepPlan.for_run(cfg, 1000, world_size=4, rank=0)
    assert plan.peak_lr == pytest.approx(0.2) and plan.base_lr == 0.1


def test_worker_args_drop_the_launch_flags_and_fix_the_run_directory():
    argv = ["-v", "train", "--config", "c.yaml", "--nproc-per-node", "2", "--max-restarts=1", "--nnodes", "1"]
    assert worker_args(argv, Path("/r/x")) == ["-v", "train", "--config", "c.yaml", "--out", "/r/x"]
    assert worker_args(["train", "--out", "/a", "--node-rank", "0"], Path("/b")) == ["train", "--out", "/a"]
    assert worker_args(["train", "--resume", "/a", "--nproc-per-node=2"], None) == ["train", "--resume", "/a"]


def test_launch_builds_torchrun_arguments_and_refuses_bad_topologies():
    one = Launch(2).torchrun_args(["train"])
    assert "--standalone" in one and one[-3:] == ["--module", "imgcls", "train"]
    multi = Launch(8, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.2:29500", max_restarts=3).torchrun_args([])
    assert "--nnodes=2" in multi and "--node-rank=1" in multi and "--master-addr=10.0.0.2" in multi
    assert "--master-port=29500" in multi and "--max-restarts=3" in multi
    import torch.distributed.run as torchrun

    torchrun.get_args_parser().parse_args([*multi, "train"])  # torchrun accepts what we build
    with pytest.raises(UsageError, match="--rdzv-endpoint"):
        Launch(2, nnodes=2)
    with pytest.raises(UsageError, match="--node-rank 2"):
        Launch(2, nnodes=2, node_rank=2, rdzv_endpoint="h:1")
    with pytest.raises(UsageError, match="HOST:PORT"):
        Launch(2, nnodes=2, rdzv_endpoint="nohost")
    with pytest.raises(UsageError, match="--nproc-per-node"):
        Launch(0)
    for port in ("0", "65536", "99999", "-1", "x"):
        with pytest.raises(UsageError, match="a port from 1 to 65535"):
            Launch(1, nnodes=2, rdzv_endpoint=f"10.0.0.2:{port}")
    ipv6 = Launch(1, nnodes=2, rdzv_endpoint="[fd00::2]:65535").torchrun_args([])
    assert "--master-addr=[fd00::2]" in ipv6 and "--master-port=65535" in ipv6


def test_the_nodes_wait_for_each_other_as_long_as_the_config_says():
    multi = Launch(1, nnodes=2, rdzv_endpoint="10.0.0.2:29500", join_timeout_s=42.5).torchrun_args([])
    assert "--rdzv-conf=timeout=43" in multi  # torchrun's static rendezvous takes whole seconds
    assert not any(a.startswith("--rdzv-conf") for a in Launch(2).torchrun_args([]))  # standalone: one machine


def test_the_launcher_refuses_before_any_worker_starts_what_every_worker_would_refuse():
    from imgcls.errors import DeviceError
    from imgcls.train.launch import preflight

    def cfg(**keys: object) -> RunConfig:
        return RunConfig.model_validate(
            {"train": {"device": keys.get("device", "cpu")}, "distributed": {"sync_bn": keys.get("sync_bn", False)},
             "model": {"arch": keys.get("arch", "resnet8")}}
        )  # fmt: skip

    with pytest.raises(ConfigError, match="needs CUDA"):
        preflight(Launch(2), cfg(sync_bn=True))
    preflight(Launch(1), cfg(sync_bn=True))  # one process: nothing to synchronise, nothing refused
    preflight(Launch(2), cfg())
    with pytest.raises(ConfigError, match="unknown model 'resnet188'; did you mean 'resnet18'"):
        preflight(Launch(2), cfg(arch="resnet188"))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            preflight(Launch(2), cfg(device="cuda"))
    else:
        with pytest.raises(DeviceError, match=f"has {torch.cuda.device_count()}"):
            preflight(Launch(torch.cuda.device_count() + 1), cfg(device="cuda"))


def test_more_cpu_workers_than_cores_is_allowed_with_a_warning_that_says_why_it_is_slow(caplog):
    from imgcls.runtime.machine import cpu_count
    from imgcls.train.launch import preflight

    cores = cpu_count()
    cpu = RunConfig.model_validate({"train": {"device": "cpu"}, "model": {"arch": "resnet8"}})
    with caplog.at_level("WARNING", logger="imgcls.train.launch"):
        preflight(Launch(cores), cpu)
        assert not caplog.records  # one worker per core: nothing to say
        preflight(Launch(cores + 1), cpu)
    [record] = caplog.records
    assert record.getMessage() == (
        f"{cores + 1} workers on {cores} core{'s' if cores > 1 else ''}: they take turns on the cores at 1 thread "
        f"each, which is slower than --nproc-per-node {cores} or fewer"
    )


def test_more_threads_than_cores_is_allowed_with_a_warning_that_names_the_better_setting():
    from imgcls.runtime.machine import cpu_count
    from imgcls.train.factory import too_many_threads

    cores = cpu_count()

    def cfg(threads: int | None, device: str = "cpu") -> RunConfig:
        return RunConfig.model_validate({"train": {"device": device, "threads": threads}})

    assert too_many_threads(cfg(None)) is None  # chosen for you: one per core
    assert too_many_threads(cfg(cores)) is None
    assert too_many_threads(cfg(cores * 4, "cuda")) is None  # the GPU does the work
    s = "s" if cores > 1 else ""
    assert too_many_threads(cfg(cores * 4)) == (
        f"train.threads={cores * 4} on {cores} core{s}: the threads take turns on the cores, which is slower than "
        f"train.threads={cores} (unset, it is chosen for you)"
    )
    assert too_many_threads(cfg(cores), processes_per_machine=2) == (
        f"train.threads={cores} in each of 2 processes on {cores} core{s}: the threads take turns on the cores, "
        f"which is slower than train.threads={max(1, cores // 2)} (unset, it is chosen for you)"
    )


def test_a_negative_seed_is_refused_by_the_configuration_not_by_numpy_mid_run():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        RunConfig.model_validate({"train": {"seed": -1}})
    assert RunConfig.model_validate({"train": {"seed": 2**40}}).train.seed == 2**40  # numpy takes it modulo 2**32


def test_a_job_whose_every_worker_refused_the_run_exits_2_without_a_resume_hint(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from imgcls.train.launch import _job_failed

    def failed(*codes: int) -> ChildFailedError:
        failures = {rank: ProcessFailure(rank, 100 + rank, code, str(tmp_path / "none.json")) for rank, code in
                    enumerate(codes)}  # fmt: skip
        return ChildFailedError("imgcls", failures)

    refused = _job_failed(failed(2, 2), Launch(2), tmp_path)
    assert refused.exit_code == 2 and "did not start" in str(refused) and "--resume" not in (refused.hint or "")
    crashed = _job_failed(failed(1, -9), Launch(2), tmp_path)
    assert crashed.exit_code == 1 and "worker rank 1 (pid 101) was killed by SIGKILL" in str(crashed)
    survivor = _job_failed(failed(5, -9), Launch(2), tmp_path)  # rank 0 saw rank 1's connection close
    assert "worker rank 0 (pid 100) lost its connection to a worker that died; worker rank 1 (pid 101) was " \
           "killed by SIGKILL" in str(survivor)  # fmt: skip
    waited = _job_failed(failed(4, -9), Launch(2), tmp_path)
    assert "worker rank 0 (pid 100) gave up waiting for the others" in str(waited)
    aborted = _job_failed(failed(-6, -15), Launch(2), tmp_path)  # NCCL's watchdog on a collective timeout
    assert "worker rank 0 (pid 100) was killed by SIGABRT (a native abort: on GPUs, NCCL's watchdog ends a worker " \
           "whose collective waited longer than distributed.timeout_s" in str(aborted)  # fmt: skip


def test_sync_bn_on_cpu_is_refused_with_the_alternative():
    import torch

    from imgcls.train.distributed import wrap_model

    env = DistEnv(rank=0, world_size=2, local_world_size=2)
    with pytest.raises(ConfigError, match="needs CUDA"):
        wrap_model(env, torch.nn.BatchNorm2d(3), sync_bn=True, device="cpu")


@pytest.mark.parametrize(("kind", "path"), [("vertex", "deploy/vertex/train-custom-job.yaml"),
                                            ("k8s", "deploy/k8s/train-pytorchjob.yaml")])  # fmt: skip
def test_print_launch_matches_the_checked_in_deploy_spec(kind, path):
    cmd = [sys.executable, "-m", "imgcls", "train", "--config", "configs/cifar10.yaml"]
    cmd += ["--nproc-per-node", "8", "--nnodes", "2", "--print-launch", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / path).read_text(), f"{path} is stale: regenerate it with {' '.join(cmd[2:])}"
    spec = yaml.safe_load(proc.stdout)
    text = str(spec)
    assert "--nproc-per-node 8 --nnodes 2" in text and "--out " in text
    if kind == "k8s":
        assert spec["kind"] == "PyTorchJob" and spec["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    else:
        pools = spec["jobSpec"]["workerPoolSpecs"]
        assert [p["replicaCount"] for p in pools] == [1, 1] and pools[0]["machineSpec"]["acceleratorCount"] == 8


def test_print_launch_refuses_an_unknown_kind():
    from imgcls.train.launch_spec import launch_spec

    with pytest.raises(UsageError, match="vertex, k8s"):
        launch_spec("slurm", RunConfig(), None, Launch(1))


def test_a_rank_that_cannot_reach_rank_0_ends_with_the_address_and_the_fix(monkeypatch):
    import socket

    from imgcls.errors import ImgclsError
    from imgcls.train.distributed import init

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    with pytest.raises(ImgclsError) as caught:
        init(DistEnv(rank=1, world_size=2, local_world_size=2), "cpu", timeout_s=1.0, join_timeout_s=1.0)
    assert "rank 1 could not join the gloo process group of 2 within 1 s" in caught.value.message
    assert str(port) in caught.value.message  # torch names where it looked for rank 0
    assert "distributed.join_timeout_s" in (caught.value.hint or "")
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(ImgclsError) as caught:  # no waiting: the launcher's variables are missing
        init(DistEnv(rank=1, world_size=2, local_world_size=2), "cpu", timeout_s=1.0, join_timeout_s=1.0)
    assert "MASTER_ADDR" in caught.value.message and " within " not in caught.value.message


@pytest.mark.parametrize("kind", ["vertex", "k8s"])
def test_print_launch_carries_every_option_that_changed_the_config(kind):
    """The cluster must train what this command line would have: --set, --epochs, --lr and --data are carried."""
    import shlex

    from imgcls.config import load_config

    cmd = [sys.executable, "-m", "imgcls", "train", "--config", "configs/digits.yaml", "--epochs", "3", "--lr", "0.2"]
    cmd += ["--set", "augment.hflip=true", "--set", "wandb.project=my project (a)", "--set", "name=a.b_c"]
    cmd += ["--nproc-per-node", "2", "--print-launch", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(proc.stdout)
    if kind == "k8s":
        container = spec["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        assert spec["metadata"]["name"] == "a-b-c"  # a Kubernetes name: no '.' or '_'
    else:
        container = spec["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    words = shlex.split(container["command"][2])  # as `sh -c` splits it
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    config = words[words.index("--config") + 1]
    carried = load_config(ROOT / config, sets, {"train.device": "cuda"}).to_dict()
    given = ["augment.hflip=true", "wandb.project=my project (a)", "name=a.b_c"]
    flags = {"train.epochs": 3, "optim.lr": 0.2, "train.device": "cuda"}
    wanted = load_config(ROOT / "configs" / "digits.yaml", given, flags).to_dict()
    assert carried == wanted
    assert "--gpu" in words and not any(s.startswith(("out=", "train.device=")) for s in sets)


def test_print_launch_without_a_config_file_carries_the_flags_alone():
    from imgcls.train.launch_spec import launch_spec

    cfg = RunConfig.model_validate({"data": {"name": "fashion-mnist"}})
    text = launch_spec("vertex", cfg, None, Launch(1))
    command = yaml.safe_load(text)["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["command"][2]
    assert "--config" not in command and command.endswith("--set data.name=fashion-mnist")
    assert "--rdzv-endpoint" not in command and "--node-rank" not in command  # one machine: torchrun --standalone


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nnodes", "2"], "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        (["--node-rank", "1"], "--node-rank 1 is not in 0..0 (--nnodes 1)"),
        (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:29500"], "--node-rank 2 is not in 0..1"),
        (["--nnodes", "0"], "--nnodes must be at least 1, not 0"),
        (["--nproc-per-node", "0"], "--nproc-per-node must be at least 1, not 0"),
        (["--max-restarts", "-1"], "--max-restarts must be 0 or more, not -1"),
        # a spec for a new run from a saved config, with the user's --resume dropped: refused
        (["--print-launch", "k8s", "--resume", "/nonexistent"], "--print-launch writes the spec of a new run"),
    ],
)
def test_a_launch_flag_without_nproc_per_node_launches_and_is_checked(flags, message, tmp_path):
    # Before, every launch flag without --nproc-per-node was ignored: `--nnodes 2 --rdzv-endpoint H:P` trained
    # alone on each machine and wrote two bundles. Now any of them launches, one worker per node by default.
    run_dir = tmp_path / "run"
    proc = _imgcls("train", "--config", str(ROOT / "configs" / "digits.yaml"), "--out", str(run_dir), "--no-wandb",
                   *flags)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert not run_dir.exists()


def test_a_worker_of_a_launcher_cannot_launch_workers_of_its_own(tmp_path):
    # `torchrun --nproc-per-node 2 -m imgcls train --nproc-per-node 2`: two jobs of two, in one run directory
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    proc = _imgcls("train", "--config", str(ROOT / "configs" / "digits.yaml"), "--out", str(tmp_path / "run"),
                   "--nproc-per-node", "2", env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "already worker 1 of 2" in " ".join(proc.stderr.split()) and "drop --nproc-per-node" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_resume_with_options_names_each_as_it_was_typed(tmp_path):
    proc = _imgcls("train", "--resume", str(tmp_path), "--no-wandb", "--data", "digits", "--gpu", "--no-compile",
                   "--lr", "1")  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "drop --data, --gpu, --lr, --no-compile, --no-wandb" in " ".join(proc.stderr.split())


def _imgcls(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, timeout=120, env=env)


def test_every_rank_and_every_restarted_group_gets_the_value_rank_0_proposed():
    import datetime

    import torch.distributed as dist

    from imgcls.train.distributed import DistEnv, PeerTimeout, agree

    def never() -> str:
        raise AssertionError("only rank 0 proposes, once per job")

    store = dist.HashStore()
    assert agree(DistEnv(rank=0, world_size=2), store, "run directory", lambda: "/runs/a") == "/runs/a"
    assert agree(DistEnv(rank=1, world_size=2), store, "run directory", never) == "/runs/a"
    restarted = DistEnv(rank=0, world_size=2, restart_count=1)  # a later timestamp would start the run anew
    assert agree(restarted, store, "run directory", lambda: "/runs/b") == "/runs/a"
    assert agree(DistEnv(), None, "run directory", lambda: "/runs/c") == "/runs/c"  # one process: no store
    empty = dist.HashStore()
    empty.set_timeout(datetime.timedelta(seconds=0.2))
    with pytest.raises(PeerTimeout, match="rank 1: rank 0 did not share the job's run directory in time"):
        agree(DistEnv(rank=1, world_size=2), empty, "run directory", never)


@pytest.mark.parametrize(("out", "run_dir"), [(None, "/runs/digits-resnet8"), ("runs/my-run", "/runs/my-run"),
                                              ("..", "/runs/digits-resnet8"), (".", "/runs/digits-resnet8")],
                         )  # fmt: skip
def test_print_launch_names_the_shared_run_directory_as_out_does_and_says_where_it_is(out, run_dir):
    from imgcls.config import load_config
    from imgcls.train.launch_spec import launch_spec

    cfg = load_config(ROOT / "configs" / "digits.yaml", [], {"out": out} if out else {})
    text = launch_spec("k8s", cfg, ROOT / "configs" / "digits.yaml", Launch(2, 2, rdzv_endpoint="h:1"))
    assert f"# the run directory, {run_dir}, is on storage that every node shares." in text
    commands = [c["command"][2] for r in yaml.safe_load(text)["spec"]["pytorchReplicaSpecs"].values()
                for c in r["template"]["spec"]["containers"]]  # fmt: skip
    assert len(commands) == 2 and all(c.endswith(f" --out {run_dir}") for c in commands), commands


@pytest.mark.parametrize(
    ("error", "kind", "said"),
    [
        ("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 30000ms for recv operation to complete",
         "PeerTimeout", "rank 1: no answer from the other workers for 30 s (distributed.timeout_s)"),
        ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:18339: "
         "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application. "
         "Check the logs of the remote worker before reporting an error. GLHF! 🏖️",
         "PeerLost", "rank 1: another worker closed its connection: it died"),
        ("[../gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.0.0.2]:29500", "PeerLost", "it died"),
        ("NCCL error in: ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, "
         "NCCL version 2.27.3", "PeerLost", "it died"),
    ],
)  # fmt: skip
def test_a_backend_error_about_the_other_workers_says_what_happened_without_its_source_path(error, kind, said):
    from imgcls.train.distributed import PEER_LOST_EXIT, PEER_TIMEOUT_EXIT, DistEnv, peer_failure

    failure = peer_failure(DistEnv(rank=1, world_size=2), RuntimeError(error), 30)
    assert failure is not None and type(failure).__name__ == kind
    assert said in failure.message and "/__w/" not in failure.message and "GLHF" not in failure.message
    assert failure.exit_code == (PEER_TIMEOUT_EXIT if kind == "PeerTimeout" else PEER_LOST_EXIT)
    assert failure.exit_at_once  # the backend's threads may still be blocked: no teardown


def test_other_errors_and_one_process_jobs_keep_their_own_error():
    from imgcls.train.distributed import DistEnv, peer_failure

    two = DistEnv(rank=0, world_size=2)
    assert peer_failure(two, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 30) is None
    assert peer_failure(two, ValueError("connection reset by peer"), 30) is None  # only the backend's RuntimeError
    assert peer_failure(DistEnv(), RuntimeError("Connection reset by peer"), 30) is None  # no peers to lose
