!> Checks shared by the bridge test programs. Every check prints what it checked;
!> a failed check prints why and stops the *test program* (never the library).
module paramlib_test_utils
  use, intrinsic :: iso_fortran_env, only: real32, real64, int32, int64, output_unit
  use, intrinsic :: iso_c_binding, only: c_int
  use paramlib_bridge
  use paramlib_check, only: check
  implicit none
  private
  public :: model_path, check, assert_status, assert_ok, assert_close, read_field, assert_matches_file
  public :: load_ok, set_named_inputs, run_named, rss_kib

  interface assert_close
    module procedure assert_close_r32, assert_close_r64
  end interface

  interface
    function getpagesize() bind(c) result(n)
      import :: c_int
      implicit none
      integer(c_int) :: n
    end function getpagesize
  end interface

contains

  !> File `name` in the model folder given as the first command-line argument
  !> (the build tree folder the generator fixture wrote).
  function model_path(name) result(path)
    character(*), intent(in) :: name
    character(len=:), allocatable :: path
    character(len=4096) :: dir
    integer :: n, stat
    call get_command_argument(1, dir, n, stat)
    if (stat /= 0 .or. n == 0) error stop 'usage: test_program MODEL_DIR'
    path = trim(dir) // '/' // name
  end function model_path

  !> status must equal want and, for a failure, the last error must mention msg_has.
  subroutine assert_status(status, want, what, msg_has)
    integer, intent(in) :: status, want
    character(*), intent(in) :: what
    character(*), intent(in), optional :: msg_has
    character(len=:), allocatable :: msg
    msg = paramlib_last_error()
    if (status /= want) then
      write (output_unit, '(a,i0,a,i0,a)') '  FAIL  ' // what // ': status ', status, &
        ' (want ', want, '); last error: ' // msg
      flush (output_unit)
      error stop 1
    end if
    if (present(msg_has)) then
      if (index(msg, msg_has) == 0) then
        write (output_unit, '(a)') '  FAIL  ' // what // ': message "' // msg // &
          '" does not mention "' // msg_has // '"'
        flush (output_unit)
        error stop 1
      end if
    end if
    if (want == PARAMLIB_OK) then
      write (output_unit, '(a)') '  ok    ' // what
    else
      write (output_unit, '(a,i0,a)') '  ok    ' // what // ' -> status ', status, ': ' // msg
    end if
  end subroutine assert_status

  subroutine assert_ok(status, what)
    integer, intent(in) :: status
    character(*), intent(in) :: what
    call assert_status(status, PARAMLIB_OK, what)
  end subroutine assert_ok

  !> max |got - ref| <= rtol * max |ref|: relative to the field's scale, so fields
  !> of 1e-7 (kg kg-1 s-1) and 1e2 are held to the same number of digits.
  subroutine assert_close_r32(got, ref, what, rtol)
    real(real32), intent(in) :: got(:, :), ref(:, :)
    character(*), intent(in) :: what
    real(real64), intent(in) :: rtol
    call compare(real(got, real64), real(ref, real64), what, rtol)
  end subroutine assert_close_r32

  subroutine assert_close_r64(got, ref, what, rtol)
    real(real64), intent(in) :: got(:, :)
    real(real32), intent(in) :: ref(:, :)
    character(*), intent(in) :: what
    real(real64), intent(in) :: rtol
    call compare(got, real(ref, real64), what, rtol)
  end subroutine assert_close_r64

  subroutine compare(got, ref, what, rtol)
    real(real64), intent(in) :: got(:, :), ref(:, :)
    character(*), intent(in) :: what
    real(real64), intent(in) :: rtol
    real(real64) :: err, scale
    character(len=120) :: line
    if (any(shape(got) /= shape(ref))) then
      call check(.false., what // ': shapes differ')
    end if
    err = maxval(abs(got - ref))
    scale = max(maxval(abs(ref)), tiny(1.0_real64))
    write (line, '(a,es9.2,a,es9.2,a)') ' (max err ', err, ', scale ', scale, ')'
    call check(err <= rtol * scale, what // trim(line))
  end subroutine compare

  !> A raw field file: int32 nlev, int32 ncol, float32 a(nlev, ncol) (see make_test_models.py).
  subroutine read_field(path, a)
    character(*), intent(in) :: path
    real(real32), allocatable, intent(out) :: a(:, :)
    integer(int32) :: nlev, ncol
    integer :: u, stat
    open (newunit=u, file=path, access='stream', form='unformatted', status='old', &
          action='read', iostat=stat)
    if (stat /= 0) error stop 'cannot open reference file (did the generator fixture run?)'
    read (u) nlev, ncol
    allocate (a(nlev, ncol))
    read (u) a
    close (u)
  end subroutine read_field

  !> got agrees to 1e-6 with the reference field file `name` in the model folder.
  subroutine assert_matches_file(got, name, what)
    real(real32), intent(in) :: got(:, :)
    character(*), intent(in) :: name, what
    real(real32), allocatable :: ref(:, :)
    call read_field(model_path(name), ref)
    call assert_close(got, ref, what, 1e-6_real64)
  end subroutine assert_matches_file

  subroutine load_ok(m, name)
    type(paramlib_model), intent(inout) :: m
    character(*), intent(in) :: name
    integer :: status
    call m%load(model_path(name), status)
    call assert_ok(status, 'load ' // name)
  end subroutine load_ok

  !> The inputs of a model with the "named" fields, each call checked.
  subroutine set_named_inputs(m, t, q, ps)
    type(paramlib_model), intent(in) :: m
    ! target: the bridge may use the inputs in place until forward returns
    real(real32), intent(in), target :: t(:, :), q(:, :), ps(:)
    integer :: status
    call m%set_input('T', t, status)
    if (status == PARAMLIB_OK) call m%set_input('q', q, status)
    if (status == PARAMLIB_OK) call m%set_input('ps', ps, status)
    call assert_ok(status, 'set_input T, q, ps')
  end subroutine set_named_inputs

  !> One call of a model with the "named" fields; status of the first failing step.
  subroutine run_named(m, t, q, ps, heating, moistening, precip, status)
    type(paramlib_model), intent(in) :: m
    ! target: the bridge may use the inputs in place until forward returns
    real(real32), intent(in), target :: t(:, :), q(:, :), ps(:)
    real(real32), intent(inout) :: heating(:, :), moistening(:, :), precip(:)
    integer, intent(out) :: status
    call m%set_input('T', t, status, units='K')
    if (status == PARAMLIB_OK) call m%set_input('q', q, status, units='kg kg-1')
    if (status == PARAMLIB_OK) call m%set_input('ps', ps, status, units='Pa')
    if (status == PARAMLIB_OK) call m%forward(status)
    if (status == PARAMLIB_OK) call m%get_output('heating', heating, status, units='K s-1')
    if (status == PARAMLIB_OK) call m%get_output('moistening', moistening, status)
    if (status == PARAMLIB_OK) call m%get_output('precip', precip, status, units='mm s-1')
  end subroutine run_named

  !> Resident set size of this process in KiB, from /proc/self/statm (Linux).
  integer(int64) function rss_kib()
    integer(int64) :: pages_total, pages_resident
    integer :: u, stat
    rss_kib = -1
    open (newunit=u, file='/proc/self/statm', action='read', iostat=stat)
    if (stat /= 0) return
    read (u, *, iostat=stat) pages_total, pages_resident
    close (u)
    if (stat == 0) rss_kib = pages_resident * int(getpagesize(), int64) / 1024
  end function rss_kib

end module paramlib_test_utils
