"""deploy/emr/run-on-emr.sh against moto's server on 127.0.0.1 (S3 + EMR APIs), and the Databricks
job definition. The AWS CLI is the venv's (awscli 1.x); moto's request recorder shows exactly what
the script sent, which covers what moto does not model (the auto-termination policy, the region a
request was signed for) and proves that --dry-run sends nothing."""
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_servers import MotoServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "emr" / "run-on-emr.sh"
JOB_JSON = REPO / "deploy" / "databricks" / "orchard-job.json"
VENV_BIN = Path(sys.executable).parent
BUCKET = "orchard-eu"
INPUT = "s3://orchard-eu/fruits/Test"
OUTPUT = "s3://orchard-eu/runs/test-1"


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


def moto_api(server, path, method="POST") -> str:
    """Calls moto's own control API (reset, recorder) and returns the body."""
    req = urllib.request.Request(server.endpoint + path, method=method,
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


@pytest.fixture
def aws(moto, tmp_path):
    """A clean moto (no clusters, one empty bucket) recording every request, with the env and the
    files (bundle, app, model) a run needs."""
    moto_api(moto, "/moto-api/reset")
    moto.create_bucket(BUCKET)
    moto_api(moto, "/moto-api/recorder/reset-recording")
    moto_api(moto, "/moto-api/recorder/start-recording")
    bundle = tmp_path / "orchard-0.1.0-linux-x86_64.tar.gz"
    payload = tmp_path / "orchard" / "bin" / "orchard"
    payload.parent.mkdir(parents=True)
    payload.write_text("#!/bin/sh\necho not the real worker\n")
    with tarfile.open(bundle, "w:gz") as tar:  # the bundle's layout; its content is not looked at
        tar.add(payload, arcname="bin/orchard")
    app = tmp_path / "orchard_spark.py"
    app.write_text("# stands in for spark/orchard_spark.py\n")
    model = tmp_path / "mobilenet_v2.ov"
    model.write_bytes(os.urandom(1024))
    env = moto.env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"  # the venv's aws
    yield {"moto": moto, "env": env, "bundle": bundle, "app": app, "model": model}
    moto_api(moto, "/moto-api/recorder/stop-recording")


def recorded(moto) -> list:
    """The requests moto received since the recording started: (method, url, target, body, headers)."""
    out = []
    for line in moto_api(moto, "/moto-api/recorder/download-recording", method="GET").splitlines():
        e = json.loads(line)
        body = e.get("body") or ""
        if e.get("body_encoded"):
            body = base64.b64decode(body)
        out.append((e["method"], e["url"], e["headers"].get("X-Amz-Target", ""), body, e["headers"]))
    return out


def run_script(aws, *args, timeout=300):
    return subprocess.run([str(SCRIPT), *map(str, args)], env=aws["env"], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def base_args(aws, *extra):
    return [INPUT, OUTPUT, "--bundle", aws["bundle"], "--app", aws["app"],
            "--endpoint-url", aws["moto"].endpoint, "--run-id", "r1", *extra]


def opt(words, name):
    """The value after option `name` in a list of words."""
    return words[words.index(name) + 1]


CODE = f"s3://{BUCKET}/orchard-code/r1/"
BUNDLE_URI = CODE + "orchard-0.1.0-linux-x86_64.tar.gz"
APP_URI = CODE + "orchard_spark.py"


def fake_checkout(tmp_path, bundle_sh_body):
    """A copy of the script in a scratch checkout whose tools/bundle.sh is `bundle_sh_body`."""
    root = tmp_path / "checkout"
    (root / "deploy" / "emr").mkdir(parents=True)
    (root / "tools").mkdir()
    script = root / "deploy" / "emr" / "run-on-emr.sh"
    script.write_bytes(SCRIPT.read_bytes())
    script.chmod(0o755)
    bundle_sh = root / "tools" / "bundle.sh"
    bundle_sh.write_text("#!/bin/sh\n" + bundle_sh_body)
    bundle_sh.chmod(0o755)
    return root, script


# --- --help and argument checks (no AWS involved) --------------------------------------------------

def test_help_teaches_the_options():
    p = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    for word in ("--bundle", "--code-uri", "--region", "eu-west-3", "--release", "emr-7",
                 "--master-type", "--core-type", "--core-count", "--idle-timeout", "--log-uri",
                 "--tag", "--service-role", "--instance-profile", "--no-wait", "--dry-run",
                 "--endpoint-url", "--archives", "#orchard", "Exit status", "_SUCCESS"):
        assert word in p.stdout, word


@pytest.mark.parametrize("args, message", [
    (["/local/photos", OUTPUT], "INPUT must be an s3:// URI"),
    ([INPUT, OUTPUT, "--region", "us-east-1"], "outside the EU"),
    ([INPUT, OUTPUT, "--release", "emr-6.15.0"], "EMR 7.x"),
    ([INPUT, OUTPUT, "--variance", "0.9", "--k", "10"], "exclusive"),
    ([INPUT, OUTPUT, "--idle-timeout", "5"], "--idle-timeout"),
    ([INPUT, OUTPUT, "--core-count", "two"], "--core-count"),
    ([INPUT, OUTPUT, "--core-type", "m6i.metal"], "give --executors"),
    ([INPUT, OUTPUT, "--model", "no/such/model.ov"], "--model"),
    ([INPUT], "expected INPUT and OUTPUT"),
    ([INPUT, OUTPUT, "--bundle", "/nonexistent.tar.gz"], "--bundle"),
])
def test_bad_arguments_stop_before_any_call(args, message, tmp_path):
    app = tmp_path / "app.py"
    app.write_text("")
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # an `aws` that records being called: none of these may reach it
    fake = tmp_path / "aws"
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path}/aws-was-called\n")
    fake.chmod(0o755)
    p = subprocess.run([str(SCRIPT), *args, "--app", app], env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run-on-emr: error: "), p.stderr
    assert message in lines[0]
    assert not (tmp_path / "aws-was-called").exists()


# --- --dry-run -------------------------------------------------------------------------------------

def test_dry_run_prints_every_call_and_makes_none(aws):
    p = run_script(aws, *base_args(aws, "--dry-run", "--k", "20", "--glob", "*.jpg",
                                   "--shard-size", "500", "--tag", "owner=alice",
                                   "--model", "s3://models/mobilenet.h5", "--core-count", "3"))
    assert p.returncode == 0, p.stderr
    calls = [shlex.split(line) for line in p.stdout.strip().splitlines()]
    assert [c[:3] for c in calls] == [
        ["aws", "s3", "cp"], ["aws", "s3", "cp"], ["aws", "emr", "create-cluster"],
        ["aws", "emr", "list-steps"], ["aws", "emr", "describe-step"]]
    for c in calls:  # every call: the region and the endpoint, ready to copy
        assert opt(c, "--region") == "eu-west-3"
        assert opt(c, "--endpoint-url") == aws["moto"].endpoint
    assert calls[0][-6:-4] == [str(aws["bundle"]), BUNDLE_URI]
    assert calls[1][-6:-4] == [str(aws["app"]), APP_URI]

    create = calls[2]
    assert opt(create, "--release-label") == "emr-7.12.0"
    assert opt(create, "--applications") == "Name=Spark"
    assert opt(create, "--log-uri") == f"s3://{BUCKET}/orchard-logs/"
    assert opt(create, "--auto-termination-policy") == "IdleTimeout=1800"
    groups = create[create.index("--instance-groups") + 1:create.index("--instance-groups") + 3]
    assert "InstanceCount=3,InstanceType=c6i.4xlarge" in groups[1]
    conf = json.loads(opt(create, "--configurations"))
    props = {c["Classification"]: c["Properties"] for c in conf}["spark-defaults"]
    assert props["spark.dynamicAllocation.enabled"] == "false"
    assert int(props["spark.task.maxFailures"]) >= 4
    assert props["spark.executor.instances"] == str(3 * 16 // 4 - 1)
    # No --region, no --python: orchard finds the buckets' region itself, and the driver and the
    # executors run on the node's python3 (EMR 7's 3.9, with pyspark: all the application needs).
    assert not [k for k in props if "AWS_REGION" in k or k.startswith("spark.pyspark.")], props
    (step,) = json.loads(opt(create, "--steps"))
    assert step["Jar"] == "command-runner.jar"
    assert step["Args"] == [
        "spark-submit", "--deploy-mode", "cluster", "--name", "orchard r1",
        "--archives", BUNDLE_URI + "#orchard", APP_URI, "run", INPUT, OUTPUT,
        "--model", "s3://models/mobilenet.h5", "--glob", "*.jpg", "--shard-size", "500", "--k", "20"]
    tags = create[create.index("--tags") + 1:create.index("--configurations")]
    assert tags == ["project=orchard", "run-id=r1", "owner=alice"]

    # nothing reached moto: no request at all, no cluster, no object
    assert recorded(aws["moto"]) == []
    emr = aws["moto"].client(service="emr")
    assert emr.list_clusters()["Clusters"] == []
    assert aws["moto"].client().list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_region_and_python_are_passed_only_when_given(aws):
    p = run_script(aws, *base_args(aws, "--dry-run", "--region", "eu-central-1", "--python", "/usr/bin/python3.11"))
    assert p.returncode == 0, p.stderr
    calls = [shlex.split(line) for line in p.stdout.strip().splitlines()]
    assert all(opt(c, "--region") == "eu-central-1" for c in calls)
    (create,) = [c for c in calls if c[1:3] == ["emr", "create-cluster"]]
    props = {c["Classification"]: c["Properties"] for c in json.loads(opt(create, "--configurations"))}["spark-defaults"]
    assert props["spark.executorEnv.AWS_REGION"] == props["spark.yarn.appMasterEnv.AWS_REGION"] == "eu-central-1"
    assert props["spark.pyspark.python"] == props["spark.pyspark.driver.python"] == "/usr/bin/python3.11"
    assert props["spark.dynamicAllocation.enabled"] == "false"
    # --region=R (one word) counts as given too
    p = run_script(aws, *base_args(aws, "--dry-run", "--region=eu-west-1"))
    assert p.returncode == 0, p.stderr
    (create,) = [shlex.split(line) for line in p.stdout.splitlines() if " create-cluster " in line]
    props = {c["Classification"]: c["Properties"] for c in json.loads(opt(create, "--configurations"))}["spark-defaults"]
    assert props["spark.executorEnv.AWS_REGION"] == "eu-west-1" and "spark.pyspark.python" not in props
    assert recorded(aws["moto"]) == []


def test_dry_run_without_bundle_does_not_build(aws, tmp_path):
    root, script = fake_checkout(tmp_path, "touch bundle-was-run\n")
    p = subprocess.run([str(script), INPUT, OUTPUT, "--app", str(aws["app"]), "--run-id", "r1",
                        "--endpoint-url", aws["moto"].endpoint, "--dry-run", "--no-wait"],
                       env=aws["env"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert not (root / "bundle-was-run").exists()
    calls = [shlex.split(line) for line in p.stdout.strip().splitlines()]
    assert [c[2] for c in calls] == ["cp", "cp", "create-cluster", "list-steps"]  # no wait
    assert calls[0][-5] == CODE + "orchard-VERSION-linux-x86_64.tar.gz"
    assert "`tools/bundle.sh` not run" in p.stderr
    assert recorded(aws["moto"]) == []


# --- real runs against moto ------------------------------------------------------------------------

def test_builds_the_bundle_with_tools_bundle_sh(aws, tmp_path):
    # bundle.sh prints progress, then the archive's path (relative to the checkout) as its last line
    root, script = fake_checkout(tmp_path, (
        'echo "args: $*" > bundle-args.txt\n'
        "mkdir -p dist && printf 'the archive' > dist/orchard-9.9.9-linux-x86_64.tar.gz\n"
        "echo 'staging bin/orchard and lib/'\n"
        "echo dist/orchard-9.9.9-linux-x86_64.tar.gz\n"))
    p = subprocess.run([str(script), INPUT, OUTPUT, "--app", str(aws["app"]), "--run-id", "r1",
                        "--bundle-model", "/models/x.h5", "--endpoint-url", aws["moto"].endpoint,
                        "--no-wait"], env=aws["env"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (root / "bundle-args.txt").read_text().strip() == "args: --model /models/x.h5"
    key = "orchard-code/r1/orchard-9.9.9-linux-x86_64.tar.gz"
    assert aws["moto"].client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"the archive"
    (summary,) = aws["moto"].client(service="emr").list_clusters()["Clusters"]
    (step,) = aws["moto"].client(service="emr").list_steps(ClusterId=summary["Id"])["Steps"]
    assert f"s3://{BUCKET}/{key}#orchard" in step["Config"]["Args"]


def test_failing_bundle_sh_stops_before_any_call(aws, tmp_path):
    _, script = fake_checkout(tmp_path, "echo 'bin/orchard needs GLIBC_2.38 > 2.34' >&2\nexit 1\n")
    p = subprocess.run([str(script), INPUT, OUTPUT, "--app", str(aws["app"]),
                        "--endpoint-url", aws["moto"].endpoint], env=aws["env"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith("run-on-emr: error: tools/bundle.sh failed")
    assert recorded(aws["moto"]) == []


def test_run_uploads_and_creates_the_cluster_with_the_step(aws):
    moto = aws["moto"]
    p = run_script(aws, *base_args(aws, "--no-wait", "--variance", "0.95", "--model", aws["model"],
                                   "--tag", "team=vision", "--idle-timeout", "900",
                                   "--core-type", "c6i.2xlarge", "--core-count", "4",
                                   "--name", "orchard test"))
    assert p.returncode == 0, p.stderr
    requests = recorded(moto)

    # the three files are in the bucket, byte for byte
    s3 = moto.client()
    model_uri = CODE + "models/mobilenet_v2.ov"
    for local, uri in ((aws["bundle"], BUNDLE_URI), (aws["app"], APP_URI), (aws["model"], model_uri)):
        key = uri.removeprefix(f"s3://{BUCKET}/")
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == Path(local).read_bytes(), uri

    emr = moto.client(service="emr")
    (summary,) = emr.list_clusters()["Clusters"]
    cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
    assert cluster["Name"] == "orchard test"
    assert cluster["ReleaseLabel"] == "emr-7.12.0"
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]} == {
        "project": "orchard", "run-id": "r1", "team": "vision"}
    assert [a["Name"] for a in cluster["Applications"]] == ["Spark"]
    assert cluster["LogUri"] == f"s3://{BUCKET}/orchard-logs/"
    assert cluster["ServiceRole"] == "EMR_DefaultRole"
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "EMR_EC2_DefaultRole"
    assert cluster["AutoTerminate"] is True
    props = {c["Classification"]: c["Properties"] for c in cluster["Configurations"]}["spark-defaults"]
    assert props["spark.dynamicAllocation.enabled"] == "false"
    assert props["spark.task.maxFailures"] == "8"
    assert props["spark.executor.instances"] == str(4 * 8 // 4 - 1)
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=summary["Id"])["InstanceGroups"]}
    assert (groups["MASTER"]["InstanceType"], groups["MASTER"]["RequestedInstanceCount"]) == ("m6i.xlarge", 1)
    assert (groups["CORE"]["InstanceType"], groups["CORE"]["RequestedInstanceCount"]) == ("c6i.2xlarge", 4)

    (step,) = emr.list_steps(ClusterId=summary["Id"])["Steps"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["Config"]["Args"] == [
        "spark-submit", "--deploy-mode", "cluster", "--name", "orchard r1",
        "--archives", BUNDLE_URI + "#orchard", APP_URI, "run", INPUT, OUTPUT,
        "--model", model_uri, "--variance", "0.95"]

    # what moto does not model, read from the request it received: the idle auto-termination
    # policy, and that every request was signed for eu-west-3
    (run_job_flow,) = [json.loads(b) for _, _, target, b, _ in requests
                       if target == "ElasticMapReduce.RunJobFlow"]
    assert run_job_flow["AutoTerminationPolicy"] == {"IdleTimeout": 900}
    assert run_job_flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert len(requests) == 5  # 3 PUTs, RunJobFlow, ListSteps
    for _, _, _, _, headers in requests:
        assert "/eu-west-3/" in headers["Authorization"]

    # the summary says where the results and the logs are, and prints no secret
    assert f"cluster:     {summary['Id']}" in p.stdout
    assert f"step:        {step['Id']}" in p.stdout
    assert OUTPUT in p.stdout and f"s3://{BUCKET}/orchard-logs/{summary['Id']}/steps/{step['Id']}/" in p.stdout
    assert moto.secret_key not in p.stdout + p.stderr


def test_keep_cluster_and_instance_profile_options(aws):
    p = run_script(aws, *base_args(aws, "--no-wait", "--keep-cluster", "--instance-profile",
                                   "orchard-emr-ec2", "--service-role", "orchard-emr-service",
                                   "--code-uri", f"s3://{BUCKET}/code/x", "--executors", "5"))
    assert p.returncode == 0, p.stderr
    emr = aws["moto"].client(service="emr")
    (summary,) = emr.list_clusters()["Clusters"]
    cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
    assert cluster["AutoTerminate"] is False
    assert cluster["ServiceRole"] == "orchard-emr-service"
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "orchard-emr-ec2"
    props = {c["Classification"]: c["Properties"] for c in cluster["Configurations"]}["spark-defaults"]
    assert props["spark.executor.instances"] == "5"
    keys = [o["Key"] for o in aws["moto"].client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == ["code/x/orchard-0.1.0-linux-x86_64.tar.gz", "code/x/orchard_spark.py"]


def test_wait_polls_the_step_until_max_wait(aws):
    # moto leaves a step RUNNING for ever: the wait must poll describe-step and give up at --max-wait
    p = run_script(aws, *base_args(aws, "--poll", "1", "--max-wait", "2"))
    assert p.returncode == 3, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("run-on-emr: error: step s-") and "still RUNNING" in last
    assert "run-on-emr: step s-" in p.stderr and ": RUNNING" in p.stderr
    polls = [r for r in recorded(aws["moto"]) if r[2] == "ElasticMapReduce.DescribeStep"]
    assert len(polls) >= 1  # each aws call takes ~1 s or more: how many fit in 2 s depends on load
    (step,) = aws["moto"].client(service="emr").list_steps(
        ClusterId=json.loads(polls[0][3])["ClusterId"])["Steps"]
    assert json.loads(polls[-1][3])["StepId"] == step["Id"]
    assert "results:" in p.stdout  # still says where things will be


def test_aws_error_stops_with_one_clear_line(aws):
    p = run_script(aws, "s3://orchard-eu/fruits/Test", "s3://no-such-bucket/out",
                   "--bundle", aws["bundle"], "--app", aws["app"],
                   "--endpoint-url", aws["moto"].endpoint, "--run-id", "r1", "--no-wait")
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, p.stderr
    assert errors[0].startswith("run-on-emr: error: `aws s3 cp` failed")
    assert "NoSuchBucket" in errors[0] and "Check: that bucket no-such-bucket exists" in errors[0]
    assert p.stdout == ""
    # it stopped at the first failure: no EMR call, no cluster
    assert not any(r[2].startswith("ElasticMapReduce.") for r in recorded(aws["moto"]))
    assert aws["moto"].client(service="emr").list_clusters()["Clusters"] == []


def test_emr_error_names_the_call_and_what_to_check(aws, tmp_path):
    # moto accepts any role; real EMR refuses a missing one. An `aws` shim in front of the real CLI
    # answers create-cluster as EMR does then, and passes every other call through to moto.
    shim = tmp_path / "shim" / "aws"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "emr create-cluster" ]; then\n'
        "  echo >&2\n"
        "  echo 'An error occurred (ValidationException) when calling the RunJobFlow operation: "
        "Invalid InstanceProfile: EMR_EC2_DefaultRole.' >&2\n"
        "  exit 254\n"
        "fi\n"
        f'exec {VENV_BIN / "aws"} "$@"\n')
    shim.chmod(0o755)
    aws["env"]["PATH"] = f"{shim.parent}{os.pathsep}{aws['env']['PATH']}"
    p = run_script(aws, *base_args(aws, "--poll", "1", "--max-wait", "5"))
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, p.stderr
    assert errors[0].startswith("run-on-emr: error: `aws emr create-cluster` failed (exit 254): "
                                "An error occurred (ValidationException)"), errors[0]
    assert "Check: the EMR roles" in errors[0] and "aws emr create-default-roles" in errors[0]
    # the uploads happened, then nothing more: no list-steps, no wait
    targets = [r[2] for r in recorded(aws["moto"])]
    assert targets.count("") == 2 and not any(t.startswith("ElasticMapReduce.") for t in targets)
    assert p.stdout == ""


def test_failed_step_exits_2_with_the_reason_and_the_logs(aws, tmp_path):
    # moto never fails a step; a shim answers describe-step as EMR does for a failed one
    shim = tmp_path / "shim" / "aws"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "emr describe-step" ]; then\n'
        '  case "$*" in\n'
        "    *Step.Status.State*) echo FAILED ;;\n"
        "    *) printf 'Application failed\\tStep failed with exitCode 1.\\ts3://l/steps/s-1/\\n' ;;\n"
        "  esac\n"
        "  exit 0\n"
        "fi\n"
        f'exec {VENV_BIN / "aws"} "$@"\n')
    shim.chmod(0o755)
    aws["env"]["PATH"] = f"{shim.parent}{os.pathsep}{aws['env']['PATH']}"
    p = run_script(aws, *base_args(aws, "--poll", "1", "--max-wait", "30"))
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("run-on-emr: error: step s-") and " FAILED: Application failed" in last
    assert "Step failed with exitCode 1." in last and "/steps/s-" in last
    assert "rerun with the same OUTPUT" in last
    assert "step logs:" in p.stdout


# --- Databricks -------------------------------------------------------------------------------------

def test_databricks_job_definition():
    job = json.loads(JOB_JSON.read_text())
    (task,) = job["tasks"]
    params = task["spark_submit_task"]["parameters"]
    archive = opt(params, "--archives")
    assert archive.endswith("#orchard") and re.search(r"orchard-.*-linux-x86_64\.tar\.gz#", archive)
    app = params.index(next(p for p in params if p.endswith("orchard_spark.py")))
    assert params[app + 1] == "run"
    cluster = task["new_cluster"]
    assert cluster["node_type_id"] and cluster["num_workers"] >= 1
    assert cluster["spark_conf"]["spark.task.maxFailures"]
    assert job["tags"]["project"] == "orchard"
    placeholders = set(re.findall(r"<[A-Z][A-Z0-9_]*>", JOB_JSON.read_text()))
    assert {"<INPUT_URI>", "<OUTPUT_URI>"} <= placeholders
    assert "Databricks" in (REPO / "docs" / "deploy.md").read_text()
