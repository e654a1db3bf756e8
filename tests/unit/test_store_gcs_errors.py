"""How the gs:// store words a failure of the google client that no emulator can stage on demand: a connection the
client retried until its deadline (two minutes against a closed port; too slow for the suite, so the client's
error is raised here as the client raises it)."""

from __future__ import annotations

import pytest

pytest.importorskip("google.cloud.storage")


def test_a_store_the_client_could_not_reach_in_its_retries_names_the_reason_not_an_unexpected_error():
    import requests
    from google.api_core import exceptions

    from imgcls.errors import StoreError
    from imgcls.store.gcs import GCSBackend
    from imgcls.store.refs import parse_store_uri

    refused = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /storage/v1/b/bucket-x/o "
        "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new "
        'connection: [Errno 111] Connection refused"))'
    )

    def gave_up() -> None:
        raise exceptions.RetryError("Timeout of 120.0s exceeded", refused)

    store = GCSBackend(parse_store_uri("gs://bucket-x/models"), client=object())
    with pytest.raises(StoreError) as err:
        store._call("list models/", gave_up)
    assert err.value.message == (
        "cannot reach GCS while trying to list models/: [Errno 111] Connection refused, still after the client's "
        "retries"
    )
    assert err.value.hint == "check the network, or STORAGE_EMULATOR_HOST if you use an emulator"
    assert err.value.exit_code == 2
