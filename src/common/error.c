/* Error names and messages, generated from the list in cqwire.h. */
#include "cqwire.h"

const char *
cqw_strerror(int err)
{
	switch (err) {
#define CQW__MSG(name, value, text) \
	case CQW_##name:            \
		return text;
		CQW_ERRNO_MAP(CQW__MSG)
		CQW_OWN_ERRORS(CQW__MSG)
#undef CQW__MSG
	case 0:
		return "success";
	default:
		return "unknown error";
	}
}

const char *
cqw_err_name(int err)
{
	switch (err) {
#define CQW__NAME(name, value, text) \
	case CQW_##name:             \
		return #name;
		CQW_ERRNO_MAP(CQW__NAME)
		CQW_OWN_ERRORS(CQW__NAME)
#undef CQW__NAME
	case 0:
		return "OK";
	default:
		return "UNKNOWN";
	}
}
