"""The one CLI entry point: exit codes from the error's class, never a traceback for the user."""

from __future__ import annotations

import logging

import pytest
from identitylock.core import cli
from identitylock.core.errors import EXIT_BAD_INPUT, EXIT_ERROR, IdentityLockError


@pytest.fixture
def doctor_raises(monkeypatch):
    def install(exc: BaseException):
        from identitylock.core.cli import face

        def boom(args):
            raise exc

        monkeypatch.setattr(face, "cmd_doctor", boom)
        real = face.register

        def register(sub):
            real(sub)
            sub.choices["doctor"].set_defaults(func=boom)

        monkeypatch.setattr(face, "register", register)

    return install


def test_an_unexpected_error_is_one_line_and_exit_1(doctor_raises, capsys, caplog):
    doctor_raises(RuntimeError("disk on fire"))
    assert cli.main(["doctor"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.strip() == "error: unexpected RuntimeError: disk on fire (run with -v for details)"
    assert "Traceback" not in err


def test_verbose_logs_the_traceback_for_a_bug_report(doctor_raises, capsys, caplog):
    doctor_raises(RuntimeError("disk on fire"))
    with caplog.at_level(logging.DEBUG, logger="IdentityLock"):
        assert cli.main(["-v", "doctor"]) == EXIT_ERROR
    assert "RuntimeError: disk on fire" in caplog.text and "Traceback" in caplog.text


def test_our_errors_exit_with_their_class_code(doctor_raises, capsys):
    class EnvironmentProblem(IdentityLockError):
        exit_code = EXIT_ERROR

    doctor_raises(IdentityLockError("bad photo"))
    assert cli.main(["doctor"]) == EXIT_BAD_INPUT
    doctor_raises(EnvironmentProblem("server down"))
    assert cli.main(["doctor"]) == EXIT_ERROR
    assert capsys.readouterr().err.splitlines() == ["error: bad photo", "error: server down"]
