"""A store URI or reference that carries a password or a query string (often a token) is refused without
repeating it: errors end up in terminals, CI logs and the server's log.

Before, ``gs://user:secret@bucket/digits@latest`` answered "invalid bucket name 'user:secret@bucket'" and
``gs://bucket/digits@latest?access_token=ya29…`` "invalid alias 'latest?access_token=ya29…'".
"""

from __future__ import annotations

import pytest

from imgcls.errors import UsageError
from imgcls.store import parse_ref, parse_store_uri

SECRET = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("text", "shown", "what"),
    [
        (f"gs://user:{SECRET}@bucket/models/digits@latest", "gs://***@bucket/models/digits@latest", "user name"),
        (f"gs://{SECRET}@bucket/digits:3", "gs://***@bucket/digits:3", "user name"),
        (f"gs://user:{SECRET}@bucket", "gs://***@bucket", "user name"),
        (f"gs://bucket/models/digits@latest?access_token={SECRET}", "gs://bucket/models/digits@latest?…", "query"),
        (f"file:///srv/store/digits@latest?sig={SECRET}", "file:///srv/store/digits@latest?…", "query"),
        (f"gs://bucket/models/digits#{SECRET}", "gs://bucket/models/digits#…", "fragment"),
    ],
)
def test_credentials_and_query_strings_are_refused_without_repeating_them(text: str, shown: str, what: str) -> None:
    for parse in (parse_ref, parse_store_uri):
        with pytest.raises(UsageError) as info:
            parse(text)
        assert info.value.exit_code == 2
        assert SECRET not in str(info.value), str(info.value)
        assert info.value.message.startswith(shown) and what in info.value.message, info.value.message
        assert info.value.hint


def test_references_with_an_at_sign_in_the_usual_places_still_parse() -> None:
    assert parse_ref("gs://bucket/models/digits@production").alias == "production"
    assert parse_ref("/srv/my?store/digits@latest").store.location == "/srv/my?store"  # a local folder: any name
    with pytest.raises(UsageError, match="names a bucket but no model"):
        parse_ref("gs://digits@production")  # no bucket: not mistaken for credentials
