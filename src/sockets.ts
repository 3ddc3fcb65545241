// The daemons' well-known socket paths: systemd's, so existing clients find them.

/** userdbd: io.systemd.NamespaceResource and io.systemd.UserDatabase. */
export const USERDBD_SOCKET = '/run/systemd/io.systemd.NamespaceResource';
/** mntfsd: io.systemd.MountFileSystem. */
export const MNTFSD_SOCKET = '/run/systemd/io.systemd.MountFileSystem';
