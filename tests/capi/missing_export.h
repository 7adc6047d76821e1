/* Input for capi_exports_header_checker_fails: declares a function libparley
 * does not have, so check_header_exports.sh must fail on it. Never included. */
PARLEY_API parley_status parley_declared_but_not_built(void);
