// io.systemd: the interface systemd's Varlink services all list in GetInfo. It declares the
// generic errno error, io.systemd.System {origin, errnoName, errno}, that our handlers answer
// with for kernel failures (systemError in errors.ts), plus three errors sd-varlink only ever
// synthesizes on the client side. The text is systemd 262's, byte for byte, as
// GetInterfaceDescription returns it there (sd-varlink's vl_interface_io_systemd).
export const IO_SYSTEMD_IDL = `interface io.systemd

# Local error if a Varlink connection is disconnected (this never crosses the wire and is synthesized locally only).
error Disconnected()

# A method call time-out has been reached (also synthesized locally, does not cross wire)
error TimedOut()

# Some form of protocol error (also synthesized locally, does not cross wire)
error Protocol()

# A generic Linux system error ("errno"s).
error System(
	# The origin of this system error, typically 'linux' to indicate Linux error numbers.
	origin: ?string,
	# The Linux error name, i.e. ENOENT, EHWPOISON or similar.
	errnoName: ?string,
	# The numeric Linux error number. Typically the name is preferable, if specified.
	errno: ?int
)
`;

// org.varlink.service as systemd 262 serves it (sd-varlink's vl_interface_org_varlink_service);
// the members are the Varlink specification's, the comments systemd's.
export const ORG_VARLINK_SERVICE_IDL = `# General Varlink service interface
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
`;
