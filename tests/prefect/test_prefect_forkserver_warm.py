"""What a Prefect flow-run fork server prepares once for its children (unipipe_prefect.forkserver).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import json, os, ssl, sys
    import certifi
    from unipipe_prefect import forkserver

    before = set(sys.modules)
    forkserver.warm()
    made_before_any_client = sorted(forkserver._CA_CONTEXTS)
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient
    from prefect._internal import version_checking, websockets

    def pool_context(client):
        return client._client._transport._pool._ssl_context

    api = "http://127.0.0.1:9/api"
    a, b = PrefectClient(api), SyncPrefectClient(api)
    shared = pool_context(a)
    bundle = os.environ.get("SSL_CERT_FILE") or certifi.where()
    print(json.dumps({
        "made_before_any_client": made_before_any_client,
        "clients_share": pool_context(b) is shared,
        "version_check_shares": version_checking.ssl.create_default_context(cafile=bundle) is shared,
        "websocket_shares": websockets.ssl.create_default_context(cafile=bundle) is shared,
        "verifies": shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname,
        "has_cas": len(shared.get_ca_certs()) > 50,
        "loosened_is_own": version_checking.ssl.create_default_context() is not shared,
        "others_own": ssl.create_default_context(cafile=bundle) is not shared,
        "fastapi": "fastapi.encoders" in sys.modules and "fastapi.encoders" not in before,
    }))
""")


@pytest.mark.parametrize("own_ca_file", [False, True], ids=["certifi", "SSL_CERT_FILE"])
def test_the_prefect_clients_of_a_child_share_one_verifying_context_and_nobody_else_does(
        tmp_path, own_ca_file):
    """The CA file is read once in the server (a flow run makes a dozen clients, each read
    it again, ~35 ms a time): Prefect's clients, version check and websocket get that one context,
    still verifying with every CA of the file; a loosened context and anyone else's call (a
    task's code) get their own. The file is certifi's bundle, or the environment's
    ``SSL_CERT_FILE``, which Prefect takes as its ``PREFECT_API_SSL_CERT_FILE`` (a machine that
    sets it had every client read the file again before the server made a context for it)."""
    import certifi

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    expected_file = certifi.where()
    if own_ca_file:
        expected_file = str(tmp_path / "site-cas.pem")
        shutil.copyfile(certifi.where(), expected_file)
        env["SSL_CERT_FILE"] = expected_file
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    made = seen.pop("made_before_any_client")
    assert expected_file in made and certifi.where() in made
    assert seen == {"clients_share": True, "version_check_shares": True,
                    "websocket_shares": True, "verifies": True, "has_cas": True,
                    "loosened_is_own": True, "others_own": True, "fastapi": True}
