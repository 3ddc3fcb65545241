// Host network interfaces for userdbd's AddNetworkToUserNamespace: veth pairs and link removal
// over rtnetlink, alternative names, and tap devices through /dev/net/tun (systemd builds the
// same messages with sd-netlink in create_veth()/create_tap() of nsresourcework.c).
// Node has no AF_NETLINK sockets, so requests go through libc: one socket per request, one
// message, one ack. The kernel processes an rtnetlink request inside sendto() and queues the
// ack before sendto() returns, so reading it never has to wait (MSG_DONTWAIT).
import fs from 'node:fs';
import os from 'node:os';
import { SysError, check } from './errors.js';
import { ioctl, recv, sendto, socket } from './libc.js';

/** Interface names are at most IFNAMSIZ-1 bytes, alternative names ALTIFNAMSIZ-1 (linux/if.h). */
export const IFNAMSIZ = 16;
export const ALTIFNAMSIZ = 128;

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const MSG_DONTWAIT = 0x40;

// linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h
const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_NEWLINKPROP = 108;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_LINKINFO = 18;
const IFLA_NET_NS_FD = 28;
const IFLA_PROP_LIST = 52;
const IFLA_ALT_IFNAME = 53;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
/** Marks an attribute whose payload is attributes; strict parsers (RTM_NEWLINKPROP) insist. */
const NLA_F_NESTED = 0x8000;

// linux/if_tun.h: _IOW('T', 202, int) and _IOW('T', 204, int)
const TUNSETIFF = 0x400454ca;
const TUNSETOWNER = 0x400454cc;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFREQ_SIZE = 40;

/** One attribute (struct nlattr, then the payload, padded to 4 bytes). */
function attr(type: number, ...payload: Buffer[]): Buffer {
  const body = Buffer.concat(payload);
  const out = Buffer.alloc((4 + body.length + 3) & ~3);
  out.writeUInt16LE(4 + body.length, 0);
  out.writeUInt16LE(type, 2);
  body.copy(out, 4);
  return out;
}

const nest = (type: number, ...children: Buffer[]): Buffer => attr(type | NLA_F_NESTED, ...children);
const strAttr = (type: number, s: string): Buffer => attr(type, Buffer.from(`${s}\0`, 'latin1'));

function u32Attr(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return attr(type, b);
}

/** struct ifinfomsg, AF_UNSPEC, no index: links are named by IFLA_IFNAME. */
const ifinfomsg = (): Buffer => Buffer.alloc(16);

function checkName(name: string, max: number): void {
  if (name.length === 0 || Buffer.byteLength(name, 'latin1') >= max || name.includes('\0')) throw new RangeError(`bad interface name '${name}'`);
}

function checkMac(mac: Buffer): void {
  if (mac.length !== 6) throw new RangeError('a MAC address has 6 bytes');
}

let seq = 0;

/** Sends one request and throws the error its ack carries (SysError with the kernel's errno). */
function request(what: string, type: number, flags: number, body: Buffer[]): void {
  const payload = Buffer.concat(body);
  const msg = Buffer.alloc(NLMSG_HDRLEN + payload.length);
  seq = (seq + 1) >>> 0;
  msg.writeUInt32LE(msg.length, 0);
  msg.writeUInt16LE(type, 4);
  msg.writeUInt16LE(flags | NLM_F_REQUEST | NLM_F_ACK, 6);
  msg.writeUInt32LE(seq, 8);
  payload.copy(msg, NLMSG_HDRLEN);
  const fd = check(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), 'socket(AF_NETLINK)');
  try {
    const kernel = Buffer.alloc(12); // struct sockaddr_nl: the kernel is port 0, no groups
    kernel.writeUInt16LE(AF_NETLINK, 0);
    check(sendto(fd, msg, 0, kernel), 'sendto(netlink)', what);
    // An error ack quotes the request back; ours are a few hundred bytes.
    const reply = Buffer.alloc(8192);
    const n = check(recv(fd, reply, MSG_DONTWAIT), 'recv(netlink)', what);
    if (n < NLMSG_HDRLEN + 4 || reply.readUInt16LE(4) !== NLMSG_ERROR || reply.readUInt32LE(8) !== seq) {
      throw new SysError(os.constants.errno.EPROTO, 'netlink', `${what}: no ack`);
    }
    const err = reply.readInt32LE(NLMSG_HDRLEN);
    if (err < 0) throw new SysError(-err, 'netlink', what);
  } finally {
    fs.closeSync(fd);
  }
}

export interface VethPair {
  /** Host side, created in the caller's network namespace. */
  hostName: string;
  hostMac: Buffer;
  /** Peer, created directly in the network namespace `peerNetnsFd`. */
  peerName: string;
  peerMac: Buffer;
  peerNetnsFd: number;
}

/** RTM_NEWLINK of a veth pair whose peer lands in another network namespace (EEXIST if the
 * host name is taken). */
export function createVeth(v: VethPair): void {
  checkName(v.hostName, IFNAMSIZ);
  checkName(v.peerName, IFNAMSIZ);
  checkMac(v.hostMac);
  checkMac(v.peerMac);
  // The peer's payload is a struct ifinfomsg followed by its attributes (linux/veth.h).
  const peer = nest(VETH_INFO_PEER, ifinfomsg(), strAttr(IFLA_IFNAME, v.peerName), attr(IFLA_ADDRESS, v.peerMac), u32Attr(IFLA_NET_NS_FD, v.peerNetnsFd));
  const linkinfo = nest(IFLA_LINKINFO, strAttr(IFLA_INFO_KIND, 'veth'), nest(IFLA_INFO_DATA, peer));
  request(`create veth ${v.hostName}`, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(), strAttr(IFLA_IFNAME, v.hostName), attr(IFLA_ADDRESS, v.hostMac), linkinfo]);
}

/** RTM_DELLINK by name in the caller's network namespace (ENODEV if there is none). */
export function deleteLink(name: string): void {
  checkName(name, IFNAMSIZ);
  request(`delete ${name}`, RTM_DELLINK, 0, [ifinfomsg(), strAttr(IFLA_IFNAME, name)]);
}

/** RTM_NEWLINKPROP: gives the link `name` the alternative name `alt` (Linux 5.5+). */
export function addAlternativeName(name: string, alt: string): void {
  checkName(name, IFNAMSIZ);
  checkName(alt, ALTIFNAMSIZ);
  request(`altname ${name}`, RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(), strAttr(IFLA_IFNAME, name), nest(IFLA_PROP_LIST, strAttr(IFLA_ALT_IFNAME, alt))]);
}

/**
 * Creates the tap device `name` (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, as systemd's create_tap())
 * owned by `ownerUid`, and returns its /dev/net/tun fd (close-on-exec). The device is not
 * persistent: it goes away with the last fd.
 */
export function createTap(name: string, ownerUid: number): number {
  checkName(name, IFNAMSIZ);
  let fd: number;
  try {
    fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR);
  } catch (e) {
    // No tun driver: the operation is not supported here (systemd maps ENOENT the same way).
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new SysError(os.constants.errno.EOPNOTSUPP, 'open(/dev/net/tun)');
    throw e;
  }
  try {
    const ifr = Buffer.alloc(IFREQ_SIZE); // struct ifreq: ifr_name[IFNAMSIZ], then ifr_flags
    ifr.write(name, 0, IFNAMSIZ - 1, 'latin1');
    ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, IFNAMSIZ);
    check(ioctl(fd, TUNSETIFF, 'void *', ifr), 'ioctl(TUNSETIFF)', name);
    check(ioctl(fd, TUNSETOWNER, 'unsigned long', ownerUid), 'ioctl(TUNSETOWNER)', name);
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
