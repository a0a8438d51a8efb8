"""Shared fixtures of the deploy tests: paths, the pinned tools, moto, the template.

moto: the tests use the moto server that `deploy/local/emulators.sh start` runs (it serves
every AWS service on one port), found through AWS_ENDPOINT_URL_DYNAMODB, or through
STREAM_WORKER_MOTO_ENDPOINT when set. Without one, the tests that need it FAIL and say how
to start it. Every stack and bucket gets a name of its own per run, so a shared moto is fine.
"""
import json
import os
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "template.yaml"
REGION = "us-east-1"
RUN_ID = uuid.uuid4().hex[:6]


# ---------------------------------------------------------------- the template, parsed

class CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation's short tags into their long form."""


def _cfn_tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path=TEMPLATE):
    return yaml.load(Path(path).read_text(), Loader=CfnLoader)


@pytest.fixture(scope="session")
def template():
    return load_template()


def defaults(tpl):
    return {k: str(v.get("Default", "")) for k, v in tpl["Parameters"].items()}


def conditions(tpl, params):
    """Evaluates the template's Conditions for these parameter values (as CloudFormation does)."""
    values = defaults(tpl)
    values.update(params)
    done = {}

    def ev(expr):
        if isinstance(expr, dict):
            (fn, arg), = expr.items()
            if fn == "Fn::Equals":
                return str(ev(arg[0])) == str(ev(arg[1]))
            if fn == "Fn::Not":
                return not ev(arg[0])
            if fn == "Fn::Or":
                return any(ev(a) for a in arg)
            if fn == "Fn::And":
                return all(ev(a) for a in arg)
            if fn == "Ref":
                return values[arg]
            if fn == "Condition":
                return cond(arg)
            raise AssertionError(f"condition function {fn} not handled by this evaluator")
        return expr

    def cond(name):
        if name not in done:
            done[name] = ev(tpl["Conditions"][name])
        return done[name]

    return {name: cond(name) for name in tpl["Conditions"]}


# ---------------------------------------------------------------- tools

@pytest.fixture(scope="session")
def tools_bin():
    """The venv that deploy/local/tools.sh installs (run.sh installs it before pytest)."""
    venv = os.environ.get("STREAM_WORKER_TOOLS_VENV") or str(REPO / ".local" / "tools" / "venv")
    path = Path(venv) / "bin"
    if not (path / "cfn-lint").exists():
        pytest.fail(f"the pinned tools are not installed in {venv}; run deploy/local/tools.sh install "
                    "(or deploy/tests/run.sh, which does)")
    return path


# ---------------------------------------------------------------- moto

@pytest.fixture(scope="session")
def moto_endpoint():
    raw = os.environ.get("STREAM_WORKER_MOTO_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    how = ('start the emulators: eval "$(deploy/local/emulators.sh start)" in this shell '
           "(moto serves S3, CloudFormation, Lambda, ECS ... on AWS_ENDPOINT_URL_DYNAMODB's port)")
    if not raw:
        pytest.fail(f"no moto endpoint: AWS_ENDPOINT_URL_DYNAMODB is not set; {how}")
    # moto's CloudFormation finds a template in its own S3 only under a 'localhost' URL
    # (the AWS CLI builds the template URL from the endpoint); it is the same server.
    endpoint = raw.replace("://127.0.0.1:", "://localhost:")
    try:
        urllib.request.urlopen(endpoint, timeout=3)
    except urllib.error.HTTPError:
        pass  # any HTTP answer: the server is up
    except OSError as e:
        pytest.fail(f"moto does not answer at {raw} ({e}); {how}")
    return endpoint


@pytest.fixture(scope="session")
def aws(moto_endpoint):
    """aws(service) -> a boto3 client on moto."""
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    return lambda service: session.client(service, endpoint_url=moto_endpoint)


@pytest.fixture(scope="session")
def aws_env(moto_endpoint, tools_bin, tmp_path_factory):
    """Environment for the scripts: moto for every service, the pinned AWS CLI first on PATH,
    no user AWS configuration."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_ENDPOINT_URL") and k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
    empty = tmp_path_factory.mktemp("awsconfig") / "none"
    env.update(
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_PAGER="",
        PATH=f"{tools_bin}:{env.get('PATH', '')}",
    )
    return env


def unique(prefix):
    return f"{prefix}-{RUN_ID}-{uuid.uuid4().hex[:4]}"


# ---------------------------------------------------------------- the Lambda zip

@pytest.fixture(scope="session")
def lambda_zip(tmp_path_factory):
    """STREAM_WORKER_LAMBDA_ZIP (the real build) when set, else a small zip of the same shape."""
    real = os.environ.get("STREAM_WORKER_LAMBDA_ZIP")
    if real:
        path = Path(real)
        if not path.is_file():
            pytest.fail(f"STREAM_WORKER_LAMBDA_ZIP={real} is not a file; build it with deploy/build-lambda.sh")
    else:
        path = tmp_path_factory.mktemp("zip") / "bootstrap.zip"
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(info, "#!/bin/sh\necho 'stand-in for stream-worker-lambda'\n")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names == ["bootstrap"], f"{path}: a provided.al2023 zip holds one file, bootstrap; got {names}"
        mode = z.getinfo("bootstrap").external_attr >> 16
        assert mode & 0o111, f"{path}: bootstrap is not executable (mode {oct(mode)})"
    return path


def run(cmd, env, timeout=180, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def stack_outputs_or_resources(cf, stack):
    """Logical id (or output key) -> physical id; moto keeps no outputs for change-set stacks."""
    resources = {r["LogicalResourceId"]: r.get("PhysicalResourceId")
                 for r in cf.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
    return resources


def jdump(value):
    return json.dumps(value, indent=1, default=str)
