// Where trusted verity signing certificates live; its own module so that the daemon can name
// the default without loading the signature code (pkijs) at start-up.

/** systemd's CONF_PATHS("verity.d"), highest priority first. */
export const DEFAULT_VERITY_CERT_DIRECTORIES: readonly string[] = [
  '/etc/verity.d',
  '/run/verity.d',
  '/usr/local/lib/verity.d',
  '/usr/lib/verity.d',
];
