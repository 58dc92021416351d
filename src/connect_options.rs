//! Builder methods for [`ConnectOptions`], so that a caller can write
//! `ConnectOptions::host("h").port(2222).identity("key")` instead of a struct literal.

use std::path::PathBuf;
use std::time::Duration;

use crate::transport::ConnectOptions;

impl ConnectOptions {
    /// `-l`: the remote user.
    ///
    /// ```
    /// use sftpipe::ConnectOptions;
    /// let opts = ConnectOptions::host("backup.example.org")
    ///     .user("mirror")
    ///     .port(2222)
    ///     .identity("/home/me/.ssh/id_backup")
    ///     .option("StrictHostKeyChecking=yes")
    ///     .config_file("/home/me/.ssh/backup_config");
    /// assert_eq!(opts.port, Some(2222));
    /// assert_eq!(opts.ssh_options, ["StrictHostKeyChecking=yes"]);
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// `-P`: the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `-F`: the ssh configuration file (instead of `~/.ssh/config`).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// `-i`: one more identity file (each call adds one).
    pub fn identity(mut self, path: impl Into<PathBuf>) -> Self {
        self.identities.push(path.into());
        self
    }

    /// `-o`: one more ssh option as `Key=Value` (each call adds one; ssh keeps the first
    /// value it sees for a key).
    pub fn option(mut self, key_value: impl Into<String>) -> Self {
        self.ssh_options.push(key_value.into());
        self
    }

    /// `-J`: jump host(s), comma separated.
    pub fn jump(mut self, jump: impl Into<String>) -> Self {
        self.jump = Some(jump.into());
        self
    }

    /// `-S`: the ssh program to run instead of `ssh`.
    pub fn ssh_program(mut self, program: impl Into<String>) -> Self {
        self.ssh_program = Some(program.into());
        self
    }

    /// How long requests in flight may go without a byte from the server (see
    /// [`ConnectOptions::timeout`](ConnectOptions#structfield.timeout)); zero waits
    /// forever.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Leaves ssh's cipher preference alone (see
    /// [`keep_cipher_order`](ConnectOptions#structfield.keep_cipher_order)).
    pub fn keep_cipher_order(mut self, keep: bool) -> Self {
        self.keep_cipher_order = keep;
        self
    }

    /// `--connections`: at most `n` SFTP channels (see
    /// [`connections`](ConnectOptions#structfield.connections) and [`crate::pool`]); 1 for
    /// a single channel.
    ///
    /// ```
    /// use sftpipe::ConnectOptions;
    /// let opts = ConnectOptions::host("far.example.org").connections(4).eager_connections(true);
    /// assert_eq!(opts.max_connections(), 4);
    /// ```
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n);
        self
    }

    /// `--eager-connections`: open every channel at the start.
    pub fn eager_connections(mut self, eager: bool) -> Self {
        self.eager_connections = eager;
        self
    }

    /// `--separate-connections`: one ssh connection (and login) per channel.
    pub fn separate_connections(mut self, separate: bool) -> Self {
        self.separate_connections = separate;
        self
    }
}
