// org.varlink.service as systemd 262 serves it (sd-varlink's vl_interface_org_varlink_service);
// the members are the Varlink specification's, the comments systemd's. Every server answers it
// (server.ts: GetInfo, GetInterfaceDescription); its errors are the protocol's own (ERR in
// ../errors.ts names them for the server's use).
import { defineInterface } from './define.js';

export const VarlinkService = defineInterface<Methods, Errors>(`# General Varlink service interface
interface org.varlink.service

# Get service meta information
method GetInfo() -> (
	# String identifying the vendor of this service
	vendor: string,
	# String identifying the product implementing this service
	product: string,
	# Version string of this product
	version: string,
	# Web URL pointing to additional information about this service
	url: string,
	# List of interfaces implemented by this service
	interfaces: []string
)

# Get description of an implemented interface in Varlink IDL format
method GetInterfaceDescription(
	# Name of interface to query interface description of
	interface: string
) -> (
	# Interface description in Varlink IDL format
	description: string
)

# Error returned if a method is called on an unknown interface
error InterfaceNotFound(
	# Name of interface that was called but does not exist
	interface: string
)

# Error returned if an unknown method is called on an known interface
error MethodNotFound(
	# Name of method that was called but does not exist
	method: string
)

# Error returned if a method is called that is known but not implemented
error MethodNotImplemented(
	# Name of method that was called but is not implemented
	method: string
)

# Error returned if a method is called with an invalid parameter
error InvalidParameter(
	# Name of the invalid parameter
	parameter: string
)

# General permission error
error PermissionDenied()

# A method was called with the 'more' flag off, but it may only be called with the flag turned on
error ExpectedMore()
`);

// --- generated from the IDL by typegen.ts: do not edit below ---
export type GetInfoParameters = Record<string, never>;
export type GetInfoReply = { vendor: string; product: string; version: string; url: string; interfaces: string[] };
export type GetInterfaceDescriptionParameters = { interface: string };
export type GetInterfaceDescriptionReply = { description: string };
export type Methods = { GetInfo: { parameters: GetInfoParameters; reply: GetInfoReply }; GetInterfaceDescription: { parameters: GetInterfaceDescriptionParameters; reply: GetInterfaceDescriptionReply } };
export type Errors = { InterfaceNotFound: { interface: string }; MethodNotFound: { method: string }; MethodNotImplemented: { method: string }; InvalidParameter: { parameter: string }; PermissionDenied: Record<string, never>; ExpectedMore: Record<string, never> };
// --- end of generated types ---
