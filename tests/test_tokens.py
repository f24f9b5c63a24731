"""Token snapshots: validation, what a refresh answer may leave out, and safe reprs."""

from __future__ import annotations

import pytest

from zeep_sfrefresh import Token, TokenRefreshError
from zeep_sfrefresh._tokens import Generation, fingerprint

ACCESS = "00D000000000001!AQ0AQSECRETACCESS"
REFRESH = "5Aep861SECRETREFRESH"


def test_refresh_answer_without_refresh_token_or_instance_url_keeps_the_old_ones() -> None:
    old = Token(
        {
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "instance_url": "https://a.my.salesforce.com",
        }
    )
    new = Token({"access_token": "NEW", "issued_at": "1"}, previous=old)
    assert new.refresh_token == REFRESH
    assert new.instance_url == "https://a.my.salesforce.com"
    assert new.data["issued_at"] == "1"


def test_rotated_refresh_token_and_moved_instance_win() -> None:
    old = Token(
        {
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "instance_url": "https://a.my.salesforce.com",
        }
    )
    new = Token(
        {
            "access_token": "NEW",
            "refresh_token": "R2",
            "instance_url": "https://b.my.salesforce.com",
        },
        previous=old,
    )
    assert (new.refresh_token, new.instance_url) == ("R2", "https://b.my.salesforce.com")


def test_token_is_read_only_and_as_dict_is_a_copy() -> None:
    token = Token({"access_token": ACCESS})
    with pytest.raises(TypeError):
        token.data["access_token"] = "x"  # type: ignore[index]
    copy = token.as_dict()
    copy["access_token"] = "changed"
    assert token.access_token == ACCESS


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"access_token": ""},
        {"access_token": 12},
        {"access_token": "a", "instance_url": "not a url"},
        {"access_token": "a", "instance_url": "ftp://host"},
        {"access_token": "a", "instance_url": 5},
    ],
)
def test_malformed_tokens_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"access_token|instance_url") as info:
        Token(data)
    assert "SECRET" not in str(info.value)


def test_repr_shows_fingerprints_only() -> None:
    token = Token(
        {
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "instance_url": "https://a.my.salesforce.com",
        }
    )
    text = repr(token)
    assert "SECRET" not in text
    assert fingerprint(ACCESS) in text
    assert fingerprint(REFRESH) in text


def test_a_generations_repr_shows_its_epoch_and_failure_and_no_secret() -> None:
    token = Token({"access_token": ACCESS, "refresh_token": REFRESH})
    failed = Generation(token, 3, TokenRefreshError("the token endpoint refused"))
    assert (failed.token, failed.epoch) == (token, 3)
    text = repr(failed)
    assert "SECRET" not in text
    assert text == f"Generation(token={token!r}, epoch=3, failure={failed.failure!r})"
    assert repr(Generation(token, 1)) == f"Generation(token={token!r}, epoch=1, failure=None)"


def test_fingerprint_is_stable_and_distinguishes() -> None:
    assert fingerprint("a") == fingerprint("a")
    assert fingerprint("a") != fingerprint("b")
    assert fingerprint(None) == fingerprint("") == "none"
    assert fingerprint(ACCESS).startswith("sha256:")
    assert len(fingerprint(ACCESS)) == len("sha256:") + 8
