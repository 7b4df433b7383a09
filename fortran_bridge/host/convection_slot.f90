!> The convection slot of the column model: any scheme that, from a state, returns
!> temperature and humidity tendencies and a surface precipitation rate.
!>
!> A scheme extends convection_scheme and implements compute. The model calls it once per
!> step and adds its tendencies to those of the forcings. Supplied tendencies (computed
!> outside the model, e.g. in Python) enter through supplied_convection: set them, and
!> the next step applies them once.
module convection_slot
  use physical_constants, only: wp
  use column_fields, only: column_state
  use column_status, only: COLUMN_OK, COLUMN_ERR_ARGUMENT, COLUMN_ERR_NOT_READY
  implicit none
  private
  public :: convection_scheme, supplied_convection

  type, abstract :: convection_scheme
  contains
    procedure(compute_interface), deferred :: compute
  end type convection_scheme

  abstract interface
    !> dtdt (K s-1) and dqdt (kg kg-1 s-1) are (nlev, ncol) like the state, precip
    !> (kg m-2 s-1, >= 0) is (ncol).
    subroutine compute_interface(self, state, dtdt, dqdt, precip, status, message)
      import :: convection_scheme, column_state, wp
      implicit none
      class(convection_scheme), intent(inout) :: self
      type(column_state), intent(in) :: state
      real(wp), intent(out) :: dtdt(:, :), dqdt(:, :), precip(:)
      integer, intent(out) :: status
      character(len=*), intent(inout) :: message
    end subroutine compute_interface
  end interface

  !> Tendencies handed in from outside, applied by the next step only.
  type, extends(convection_scheme) :: supplied_convection
    real(wp), allocatable :: dtdt(:, :), dqdt(:, :), precip(:)
    logical :: ready = .false.
  contains
    procedure :: set => supplied_set
    procedure :: compute => supplied_compute
  end type supplied_convection

contains

  !> Tendencies for the next step: shapes (nlev, ncol) and (ncol); precip must be >= 0.
  subroutine supplied_set(self, dtdt, dqdt, precip, status, message)
    class(supplied_convection), intent(inout) :: self
    real(wp), intent(in) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    status = COLUMN_ERR_ARGUMENT
    if (any(shape(dqdt) /= shape(dtdt)) .or. size(precip) /= size(dtdt, 2)) then
      write (message, '(a,4(i0,a))') 'supplied tendencies: dtdt is (', size(dtdt, 1), ', ', &
        size(dtdt, 2), '), dqdt and precip must be the same and (', size(dtdt, 2), &
        ') but precip has ', size(precip), ' columns'
      return
    end if
    if (.not. (all(abs(dtdt) <= huge(1.0_wp)) .and. all(abs(dqdt) <= huge(1.0_wp)))) then
      message = 'supplied tendencies: dtdt or dqdt holds NaN or Inf'
      return
    end if
    if (.not. all(precip >= 0.0_wp .and. precip <= huge(1.0_wp))) then
      message = 'supplied tendencies: precip must be finite and >= 0'
      return
    end if
    self%dtdt = dtdt
    self%dqdt = dqdt
    self%precip = precip
    self%ready = .true.
    status = COLUMN_OK
  end subroutine supplied_set

  subroutine supplied_compute(self, state, dtdt, dqdt, precip, status, message)
    class(supplied_convection), intent(inout) :: self
    type(column_state), intent(in) :: state
    real(wp), intent(out) :: dtdt(:, :), dqdt(:, :), precip(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    dtdt = 0.0_wp
    dqdt = 0.0_wp
    precip = 0.0_wp
    if (.not. self%ready) then
      status = COLUMN_ERR_NOT_READY
      message = 'supplied convection: no tendencies were set for this step'
      return
    end if
    if (any(shape(self%dtdt) /= [state%nlev, state%ncol])) then
      status = COLUMN_ERR_ARGUMENT
      write (message, '(a,4(i0,a))') 'supplied convection: tendencies are (', &
        size(self%dtdt, 1), ', ', size(self%dtdt, 2), '), the model is (', state%nlev, ', ', &
        state%ncol, ')'
      return
    end if
    dtdt = self%dtdt
    dqdt = self%dqdt
    precip = self%precip
    self%ready = .false.
    status = COLUMN_OK
  end subroutine supplied_compute

end module convection_slot
