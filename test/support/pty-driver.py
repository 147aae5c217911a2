#!/usr/bin/env python3
"""Runs a command on a real pseudo-terminal, for tests of interactive CLI sessions (see pty.ts).

Usage: pty-driver.py ROWS COLUMNS -- COMMAND [ARGS...]

The command runs in a new session whose controlling terminal is the pty's slave side, of the given
size, with the terminal settings a fresh pty has (canonical mode, echo, signals from keys). The
driver keeps a descriptor of the slave open itself, so that it can read the terminal's settings at
any time, also after the command exited (that is how a test sees whether the command restored them).

Its own stdin takes one JSON object per line:
  {"write": "<base64>"}            bytes typed on the terminal
  {"resize": [rows, columns]}      a new window size (TIOCSWINSZ), then SIGWINCH to the foreground group
  {"signal": "TERM"}               a signal to the command's process
  {"termios": true}                report the terminal's settings now
Its stdout gives one JSON object per line:
  {"out": "<base64>"}              bytes the command wrote to the terminal
  {"termios": {...}}               the settings asked for (icanon, echo, isig, icrnl, opost)
  {"exit": code, "signal": n|null, "termios": {...}}   the command ended; the settings it left
After the exit line the driver ends. When its stdin ends first (the test went away), the command
gets SIGTERM, so that it stops what it started.
"""
import base64
import fcntl
import json
import os
import pty
import select
import signal
import struct
import sys
import termios


def set_size(fd, rows, columns):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, columns, 0, 0))


def settings(fd):
    attrs = termios.tcgetattr(fd)
    iflag, oflag, lflag = attrs[0], attrs[1], attrs[3]
    return {
        'icanon': bool(lflag & termios.ICANON),
        'echo': bool(lflag & termios.ECHO),
        'isig': bool(lflag & termios.ISIG),
        'icrnl': bool(iflag & termios.ICRNL),
        'opost': bool(oflag & termios.OPOST),
    }


def emit(message):
    sys.stdout.write(json.dumps(message) + '\n')
    sys.stdout.flush()


def main():
    separator = sys.argv.index('--')
    rows, columns = int(sys.argv[1]), int(sys.argv[2])
    command = sys.argv[separator + 1:]
    master, slave = pty.openpty()
    set_size(slave, rows, columns)
    pid = os.fork()
    if pid == 0:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for target in (0, 1, 2):
            os.dup2(slave, target)
        if slave > 2:
            os.close(slave)
        os.execvp(command[0], command)
    os.set_blocking(master, False)
    control = sys.stdin.fileno()
    pending = b''
    control_open = True
    status = None

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            emit({'out': base64.b64encode(data).decode('ascii')})

    while status is None:
        watched = [master] + ([control] if control_open else [])
        # The timeout only bounds how soon an exit is noticed; nothing waits on it.
        readable, _, _ = select.select(watched, [], [], 0.05)
        if master in readable:
            drain()
        if control_open and control in readable:
            chunk = os.read(control, 65536)
            if not chunk:
                # The test went away: stop the command as a closed terminal would, so that it cleans up.
                control_open = False
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            pending += chunk
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                if not line.strip():
                    continue
                request = json.loads(line)
                if 'write' in request:
                    os.write(master, base64.b64decode(request['write']))
                elif 'resize' in request:
                    set_size(slave, request['resize'][0], request['resize'][1])
                    # The kernel signals the foreground group on a size change of the master; say it again to be sure.
                    try:
                        os.killpg(os.tcgetpgrp(slave), signal.SIGWINCH)
                    except OSError:
                        pass
                elif 'signal' in request:
                    os.kill(pid, getattr(signal, 'SIG' + request['signal']))
                elif 'termios' in request:
                    emit({'termios': settings(slave)})
        waited, raw = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            status = raw
    # The kernel hands what the command wrote to the master side asynchronously: read until it is quiet.
    while select.select([master], [], [], 0.2)[0]:
        try:
            data = os.read(master, 65536)
        except (BlockingIOError, OSError):
            break
        if not data:
            break
        emit({'out': base64.b64encode(data).decode('ascii')})
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    emit({'exit': code, 'signal': killed_by, 'termios': settings(slave)})


if __name__ == '__main__':
    main()
