'use strict';
// One Error class per gRPC status code.  Every error is a DistsupError with
// .code (the number), .status ('NOT_FOUND') and .details (the daemon's message).
const { status } = require('@grpc/grpc-js');

class DistsupError extends Error {
  constructor(details, code) {
    const c = code === undefined ? status.UNKNOWN : code;
    const name = STATUS_NAMES[c] || 'UNKNOWN';
    super(details ? name + ': ' + details : name);
    this.code = c;
    this.status = name;
    this.details = details || '';
  }
}

const STATUS_NAMES = {};
for (const [k, v] of Object.entries(status)) STATUS_NAMES[v] = k;

const CLASSES = {};
const exportsObj = { DistsupError, STATUS_NAMES };
const NAMES = {
  CANCELLED: 'Cancelled', UNKNOWN: 'Unknown', INVALID_ARGUMENT: 'InvalidArgument',
  DEADLINE_EXCEEDED: 'DeadlineExceeded', NOT_FOUND: 'NotFound', ALREADY_EXISTS: 'AlreadyExists',
  PERMISSION_DENIED: 'PermissionDenied', RESOURCE_EXHAUSTED: 'ResourceExhausted',
  FAILED_PRECONDITION: 'FailedPrecondition', ABORTED: 'Aborted', OUT_OF_RANGE: 'OutOfRange',
  UNIMPLEMENTED: 'Unimplemented', INTERNAL: 'Internal', UNAVAILABLE: 'Unavailable',
  DATA_LOSS: 'DataLoss', UNAUTHENTICATED: 'Unauthenticated',
};
for (const [statusName, className] of Object.entries(NAMES)) {
  const code = status[statusName];
  const cls = {
    [className]: class extends DistsupError {
      constructor(details) { super(details, code); }
    },
  }[className];
  Object.defineProperty(cls.prototype, 'name', { value: className });
  CLASSES[code] = cls;
  exportsObj[className] = cls;
}

/** The error for a status code and message. */
function errorFor(code, details) {
  const cls = CLASSES[code];
  return cls ? new cls(details) : new DistsupError(details, code);
}

/** Maps a grpc-js ServiceError (or anything thrown) to a DistsupError. */
function fromGrpcError(err) {
  if (err instanceof DistsupError) return err;
  if (err && typeof err.code === 'number') return errorFor(err.code, err.details || err.message);
  return new DistsupError(String(err && err.message ? err.message : err), status.UNKNOWN);
}

module.exports = Object.assign(exportsObj, { errorFor, fromGrpcError });
