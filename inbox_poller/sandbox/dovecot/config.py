"""The files Dovecot reads in a throwaway instance: its config, ACL file and users file.

The recipe is in ``docs/dovecot.md``. ``DovecotServer``
(:mod:`inbox_poller.sandbox.dovecot.server`) writes the config and the ACL file at
each start; :mod:`.directory` writes the users file when it lays out the instance.
Running as root needs four fixes (the login process runs as ``dovenull``, mail is
accessed as Debian's ``mail`` user, the instance directory must be searchable by that
user, and the passwd-file leaves uid/gid empty); :mod:`.directory` makes the
directory fit for the mail user. As an unprivileged user everything runs as that user,
without chroots.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from inbox_poller.sandbox.localca import LocalCA

MAIL_UID = 8
"""Debian's ``mail`` user: imap refuses to access mail as uid 0."""
MAIL_GID = 8
DH_PARAMS = Path("/usr/share/dovecot/dh.pem")

CONFIG_TEMPLATE = Template("""\
# Written by inbox_poller.sandbox.dovecot.config for a throwaway test server; see docs/dovecot.md.
base_dir = $dir/run
state_dir = $dir/state
instance_name = $instance
log_path = $dir/log/dovecot.log
info_log_path = $dir/log/dovecot.log
debug_log_path = $dir/log/dovecot.log

listen = 127.0.0.1
protocols = imap

default_internal_user = $internal_user
default_internal_group = $internal_group
default_login_user = $login_user
$privileges
ssl = yes
ssl_cert = <$ssl_cert
ssl_key = <$ssl_key
$ssl_dh
disable_plaintext_auth = no
auth_mechanisms = $mechanisms
# a wrong password would otherwise delay every later login by seconds
auth_failure_delay = 0

$passdb
userdb {
  driver = passwd-file
  args = username_format=%u $dir/users
}

mail_location = sdbox:~/sdbox
mail_fsync = never
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Archive {
    special_use = \\Archive
  }
}

protocol imap {
  mail_max_userip_connections = 200
$capability
}

service imap-login {
  chroot = $login_chroot
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
service anvil {
  chroot = $anvil_chroot
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
$extra
""")


PASSWORD_PASSDB = Template("""\
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}""")

OAUTH2_PASSDB = Template("""\
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $dir/oauth2.conf.ext
}""")

OAUTH2_TEMPLATE = Template("""\
# Written by inbox_poller.sandbox.dovecot.config: the oauth2 passdb (docs/dovecot.md).
introspection_mode = post
introspection_url = $introspection_url
force_introspection = yes
tls_ca_cert_file = $ca_file
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
""")


@dataclass(frozen=True)
class DovecotOAuth2:
    """An OAuth2-only instance: logins are XOAUTH2 or OAUTHBEARER, checked by introspection.

    *introspection_url* is an RFC 7662 endpoint over https that *ca_file* vouches for
    (``sandbox.oauth.server.OAuthServer``); *mint_token* gives the test helpers' own
    logins an access token for a user.
    """

    introspection_url: str
    ca_file: Path
    mint_token: Callable[[str], str]


def write_oauth2(directory: Path, oauth2: DovecotOAuth2) -> None:
    """Write the oauth2 passdb's settings file."""
    path = directory / "oauth2.conf.ext"
    path.write_text(
        OAUTH2_TEMPLATE.substitute(
            introspection_url=oauth2.introspection_url, ca_file=oauth2.ca_file
        ),
        encoding="utf-8",
    )
    path.chmod(0o644)


def render_config(
    *,
    directory: Path,
    instance: str,
    ca: LocalCA,
    ports: tuple[int, int],
    capability: str | None,
    extra: str,
    oauth2: bool = False,
) -> str:
    """Return ``dovecot.conf`` for the instance in *directory*, as root or as ourselves.

    *capability* replaces the post-login CAPABILITY string when given; *extra* is
    appended verbatim. *oauth2* makes the server OAuth2-only (``write_oauth2`` writes
    the passdb's settings).
    """
    if os.geteuid() == 0:
        internal_user, internal_group = "root", "root"
        login_user = "dovenull" if _user_exists("dovenull") else "nobody"
        privileges = (
            f"mail_uid = {MAIL_UID}\nmail_gid = {MAIL_GID}\n"
            "first_valid_uid = 0\nfirst_valid_gid = 0\n"
        )
        login_chroot, anvil_chroot = "login", "empty"
    else:
        internal_user = pwd.getpwuid(os.geteuid()).pw_name
        internal_group = grp.getgrgid(os.getegid()).gr_name
        login_user = internal_user
        privileges = f"first_valid_uid = {os.geteuid()}\nfirst_valid_gid = {os.getegid()}\n"
        login_chroot, anvil_chroot = "", ""
    passdb = OAUTH2_PASSDB if oauth2 else PASSWORD_PASSDB
    return CONFIG_TEMPLATE.substitute(
        mechanisms="xoauth2 oauthbearer" if oauth2 else "plain login",
        passdb=passdb.substitute(dir=directory),
        dir=directory,
        instance=instance,
        internal_user=internal_user,
        internal_group=internal_group,
        login_user=login_user,
        privileges=privileges,
        ssl_cert=ca.server_cert,
        ssl_key=ca.server_key,
        ssl_dh=f"ssl_dh = <{DH_PARAMS}" if DH_PARAMS.exists() else "",
        capability=f"  imap_capability = {capability}" if capability else "",
        login_chroot=login_chroot,
        anvil_chroot=anvil_chroot,
        imap_port=ports[0],
        imaps_port=ports[1],
        extra=extra,
    )


def write_acl(directory: Path, keywordless_folders: str | None) -> str:
    """Write the global ACL file and return the config lines that enable it ("" if none).

    Folders matching the pattern *keywordless_folders* refuse custom keywords.
    """
    if keywordless_folders is None:
        return ""
    acl_file = directory / "global-acl"
    # l lookup, r read, s seen, i insert, t/e delete and expunge, k/x create and
    # delete folders; no w: no keywords and no other flags
    acl_file.write_text(f"{keywordless_folders} owner lrsitekx\n", encoding="utf-8")
    acl_file.chmod(0o644)
    return f"mail_plugins = acl\nplugin {{\n  acl = vfile:{acl_file}\n}}\n"


def write_users(directory: Path, user: str, password: str, mail_home: Path) -> None:
    """Write the passwd-file with the one test user (readable by us only)."""
    users = directory / "users"
    # uid and gid stay empty so mail_uid/mail_gid apply; the home is the 6th field
    users.write_text(f"{user}:{{PLAIN}}{password}::::{mail_home}::\n", encoding="utf-8")
    users.chmod(0o600)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
