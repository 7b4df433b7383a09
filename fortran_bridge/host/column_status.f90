!> Status codes of the column model. Nothing in the model stops the program: a routine
!> that can fail returns one of these with a message, and the caller decides.
module column_status
  implicit none
  private
  integer, parameter, public :: COLUMN_OK = 0
  integer, parameter, public :: COLUMN_ERR_ARGUMENT = 1   !< a size, shape, name or value out of range
  integer, parameter, public :: COLUMN_ERR_NOT_READY = 2  !< e.g. a step with no supplied tendencies
  integer, parameter, public :: COLUMN_ERR_STATE = 3      !< the state left its physical range
  integer, parameter, public :: COLUMN_ERR_HANDLE = 4     !< (bindings) no model behind a handle
  integer, parameter, public :: COLUMN_MESSAGE_LEN = 256
end module column_status
